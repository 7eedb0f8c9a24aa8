"""The LightningDataModule: prepares a text's token folder once, then streams token windows from it."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader, IterableDataset

from nanogpt.data.prepare import find_corpus, prepare_corpus
from nanogpt.data.sources import find_source, prepare_source
from nanogpt.data.tokenizer import Tokenizer, tokenizer_from_meta
from nanogpt.data.windows import EvalWindows, TrainWindows, check_split_fits
from nanogpt.options import positive_int


class TextDataModule(L.LightningDataModule):
    """A text corpus as token windows: prepares its folder under ``data_dir`` once, then streams from it.

    The prepared folder, ``corpus_dir``, is named by the text's md5, the tokenizer and ``val_fraction``
    (see :mod:`nanogpt.data.prepare`), so runs on different texts never share token files.

    Args:
        data_dir: folder holding ``input.txt`` (or a download of it) and one prepared folder per text.
        path: the text to train on; defaults to ``data_dir/input.txt``.
        url, md5: where to download ``input.txt`` from when it is missing, and its checksum.
        source: instead of ``path``, any corpus prepared through ``datasets``: files, folders, globs,
            ``hf:<name or save_to_disk folder>`` (see :mod:`nanogpt.data.sources`).
        text_column, split: the column holding the text, and the split, of a dataset ``source``.
        errors: ``strict``, or ``replace`` to read bytes that are not UTF-8 as U+FFFD (``source``).
        num_proc: tokenizing processes for ``source``; ``None``: one per core.
        tokenizer: ``char``, ``gpt2``, or another tiktoken encoding by name (with ``source``).
        block_size: tokens per window (the model's context).
        batch_size: windows per batch, per device (a micro-batch).
        global_batch_tokens: tokens per optimizer step over every device, or ``None``; ``train``
            derives the gradient accumulation from it (:func:`nanogpt.loop.accumulation_for`).
        eval_batches: validation batches per evaluation; ``None`` scores the whole val split.
        num_workers: DataLoader worker processes; 0 builds batches in the training process,
            which costs tens of microseconds per batch.
        seed: seeds the training stream; validation windows use their own fixed seed.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        path: str | os.PathLike | None = None,
        url: str | None = None,
        md5: str | None = None,
        source: str | None = None,
        text_column: str = "text",
        split: str = "train",
        errors: str = "strict",
        num_proc: int | None = None,
        tokenizer: str = "char",
        val_fraction: float = 0.1,
        block_size: int = 256,
        batch_size: int = 64,
        global_batch_tokens: int | None = None,
        eval_batches: int | None = 200,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 1337,
    ) -> None:
        super().__init__()
        positive_int(block_size, "data.block_size")
        positive_int(batch_size, "data.batch_size")
        if eval_batches is not None:  # null scores the whole val split
            positive_int(eval_batches, "data.eval_batches")
        self.data_dir = Path(data_dir)
        self.path = path
        self.url = url
        self.md5 = md5
        self.source = source
        self.text_column = text_column
        self.split = split
        self.errors = errors
        self.num_proc = num_proc
        self.tokenizer_kind = tokenizer
        self.val_fraction = val_fraction
        self.block_size = block_size
        self.batch_size = batch_size
        self.global_batch_tokens = global_batch_tokens
        self.eval_batches = eval_batches
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = seed
        self._meta: dict | None = None

    def prepare_data(self) -> None:
        if self.source is not None:
            self._meta = prepare_source(self.data_dir, self.source, num_proc=self.num_proc, **self._source())
        else:
            self._meta = prepare_corpus(
                self.data_dir, self.path, self.url, self.md5, self.tokenizer_kind, self.val_fraction
            )

    def _source(self) -> dict:
        return {
            "tokenizer": self.tokenizer_kind,
            "val_fraction": self.val_fraction,
            "text_column": self.text_column,
            "split": self.split,
            "errors": self.errors,
        }

    @property
    def meta(self) -> dict:
        """The prepared folder's checked ``meta.json``, plus ``corpus_dir``."""
        if self._meta is None:
            # Another process (DDP local rank 0) prepared the folder: find it by the text's md5.
            if self.source is not None:
                self._meta = find_source(self.data_dir, self.source, **self._source())
            else:
                self._meta = find_corpus(self.data_dir, self.path, self.tokenizer_kind, self.val_fraction)
        return self._meta

    @property
    def corpus_dir(self) -> Path:
        """The prepared folder: ``train.bin``, ``val.bin`` and ``meta.json`` of this text."""
        return Path(self.meta["corpus_dir"])

    @property
    def vocab_size(self) -> int:
        return self.meta["tokenizer"]["vocab_size"]

    @property
    def tokenizer(self) -> Tokenizer:
        return tokenizer_from_meta(self.meta["tokenizer"])

    def setup(self, stage: str | None = None) -> None:
        for split in ("train", "val"):
            check_split_fits(self.meta, split, self.block_size)

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, dataset: IterableDataset) -> DataLoader:
        # batch_size=None: the datasets already yield whole batches
        return DataLoader(
            dataset,
            batch_size=None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        rank, _ = self._rank()
        # On resume Lightning has restored global_step before asking for the loader, so the
        # stream continues exactly where the interrupted run stopped.
        start = 0
        if self.trainer is not None:
            start = self.trainer.global_step * self.trainer.accumulate_grad_batches
        return self._loader(
            TrainWindows(
                self.corpus_dir / "train.bin",
                self.block_size,
                self.batch_size,
                self.seed,
                rank,
                start,
                dtype=self.meta["dtype"],
            )
        )

    def eval_dataset(self, split: str = "val", num_batches: int | None = None) -> EvalWindows:
        rank, world = self._rank()
        return EvalWindows(
            self.corpus_dir / f"{split}.bin",
            self.block_size,
            self.batch_size,
            num_batches,
            rank,
            world,
            dtype=self.meta["dtype"],
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.eval_dataset("val", self.eval_batches))
