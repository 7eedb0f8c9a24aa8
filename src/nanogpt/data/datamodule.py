"""The LightningDataModule: a prepared corpus, served as token windows."""

from __future__ import annotations

import dataclasses
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, IterableDataset

from nanogpt.data.corpus import Corpus
from nanogpt.data.prepare import CorpusConfig, find_corpus, prepare_corpus
from nanogpt.data.tokenizer import Tokenizer
from nanogpt.data.windows import EvalWindows, TrainWindows, check_split_fits
from nanogpt.options import positive_int


class TextDataModule(L.LightningDataModule):
    """A corpus as token windows: its prepared folder (:mod:`nanogpt.data.prepare`), streamed.

    Every option is one of ``configs/data/text.yaml``, which holds their defaults and says what
    each does. The options that decide the corpus are :class:`~nanogpt.data.prepare.CorpusConfig`'s
    fields, its one spelling in Python, passed on to it whole (``corpus_options``). The window options
    are this class's own: ``block_size`` (tokens per window, the model's context), ``batch_size``
    (windows per micro-batch, per device), ``global_batch_tokens`` (the run's spec derives the
    gradient accumulation from it), ``eval_batches`` (``None``: the whole val split),
    ``final_eval_batches`` (the same, for the run's final validation, :meth:`final_eval_dataset`),
    ``num_workers``, ``pin_memory`` and ``seed`` (of the training stream).

    The corpus is found or prepared once per object: pass an already prepared one as ``corpus``,
    or let Lightning's :meth:`prepare_data` (local rank 0) prepare it; other ranks find it in
    :meth:`setup`. Either way it is checksummed at most once.
    """

    def __init__(
        self,
        *,
        block_size: int,
        batch_size: int,
        global_batch_tokens: int | None,
        eval_batches: int | None,
        final_eval_batches: int | None,
        num_workers: int,
        pin_memory: bool,
        seed: int,
        corpus: Corpus | None = None,
        **corpus_options: Any,
    ) -> None:
        super().__init__()
        positive_int(block_size, "data.block_size")
        positive_int(batch_size, "data.batch_size")
        if eval_batches is not None:  # null scores the whole val split
            positive_int(eval_batches, "data.eval_batches")
        if final_eval_batches is not None:
            positive_int(final_eval_batches, "data.final_eval_batches")
        unknown = sorted(set(corpus_options) - {f.name for f in dataclasses.fields(CorpusConfig)})
        if unknown:
            raise ValueError(
                f"{', '.join(f'data.{name}' for name in unknown)}: no such data option; the options and "
                "their defaults are in configs/data/text.yaml (docs/configuration.md lists them)"
            )
        self.config = CorpusConfig.from_data(corpus_options)
        self.block_size = block_size
        self.batch_size = batch_size
        self.global_batch_tokens = global_batch_tokens
        self.eval_batches = eval_batches
        self.final_eval_batches = final_eval_batches
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = seed
        self._corpus = corpus

    def prepare_data(self) -> None:
        # Lightning calls this on local rank 0; train() may have called it already
        if self._corpus is None:
            self._corpus = prepare_corpus(self.config)

    @property
    def corpus(self) -> Corpus:
        """The prepared corpus; found (not built) when this process did not prepare it (DDP ranks
        other than local rank 0, after Lightning's barrier behind rank 0's ``prepare_data``)."""
        if self._corpus is None:
            self._corpus = find_corpus(self.config)
        return self._corpus

    @property
    def vocab_size(self) -> int:
        return self.corpus.vocab_size

    @property
    def tokenizer(self) -> Tokenizer:
        return self.corpus.tokenizer()

    def setup(self, stage: str | None = None) -> None:
        for split in ("train", "val"):
            check_split_fits(self.corpus, split, self.block_size)

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
        corpus = self.corpus
        return self._loader(
            TrainWindows(
                corpus.path("train"),
                self.block_size,
                self.batch_size,
                self.seed,
                rank,
                start,
                dtype=corpus.meta.dtype,
            )
        )

    def eval_dataset(self, split: str = "val", num_batches: int | None = None) -> EvalWindows:
        rank, world = self._rank()
        corpus = self.corpus
        return EvalWindows(
            corpus.path(split),
            self.block_size,
            self.batch_size,
            num_batches,
            rank,
            world,
            dtype=corpus.meta.dtype,
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.eval_dataset("val", self.eval_batches))

    def final_eval_dataset(self) -> EvalWindows:
        """The windows of the run's final validation (:func:`nanogpt.training.validation.final_validation`):
        the whole val split, or ``final_eval_batches`` of it, all of them in this process (one
        process scores them, so the count does not depend on the ranks)."""
        corpus = self.corpus
        return EvalWindows(
            corpus.path("val"),
            self.block_size,
            self.batch_size,
            self.final_eval_batches,
            dtype=corpus.meta.dtype,
        )
