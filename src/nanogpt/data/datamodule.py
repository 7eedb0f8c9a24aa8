"""Stream random token windows from the memmaps prepared by :mod:`nanogpt.data.prepare`.

Datasets yield whole batches ``(x, y)`` of shape ``(batch_size, block_size)`` where ``y`` is ``x``
shifted left by one token. Each batch is one fancy-indexed read of the memmap, so the corpus never
has to fit in RAM and there is no per-sample collate work.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from nanogpt.data.prepare import TOKEN_DTYPE, prepare_corpus, read_meta
from nanogpt.data.tokenizer import Tokenizer, tokenizer_from_meta

Batch = tuple[torch.Tensor, torch.Tensor]


def _windows(data: np.ndarray, offsets: np.ndarray, block_size: int) -> Batch:
    idx = offsets[:, None] + np.arange(block_size + 1)  # (B, T+1)
    w = torch.from_numpy(data[idx].astype(np.int64))  # (B, T+1)
    return w[:, :-1].contiguous(), w[:, 1:].contiguous()


class TrainWindows(IterableDataset):
    """An endless stream of batches of random windows.

    Batch ``i`` is drawn from a generator seeded by ``(seed, rank, i)``: ranks never share a
    stream, workers take alternate batch indices so they never repeat each other, and the stream
    does not depend on the number of workers. Starting at ``start_batch`` resumes it exactly.
    """

    def __init__(self, bin_path: str | os.PathLike, block_size: int, batch_size: int, seed: int,
                 rank: int = 0, start_batch: int = 0) -> None:
        super().__init__()
        self.bin_path = str(bin_path)
        self.block_size = block_size
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.start_batch = start_batch

    def __iter__(self) -> Iterator[Batch]:
        data = np.memmap(self.bin_path, dtype=TOKEN_DTYPE, mode="r")
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        high = len(data) - self.block_size  # the last start that still leaves room for the target
        i = self.start_batch + worker
        while True:
            rng = np.random.default_rng([self.seed, self.rank, i])
            yield _windows(data, rng.integers(0, high, size=self.batch_size), self.block_size)
            i += num_workers


class EvalWindows(IterableDataset):
    """A fixed list of windows, split across ranks.

    With ``num_batches`` set, the windows are drawn from a generator with a fixed seed, so one
    checkpoint always gets the same loss. With ``num_batches=None`` the whole split is covered by
    non-overlapping windows: every token after the first ``block_size`` of a window is scored once.
    """

    def __init__(self, bin_path: str | os.PathLike, block_size: int, batch_size: int,
                 num_batches: int | None, rank: int = 0, world_size: int = 1, seed: int = 0) -> None:
        super().__init__()
        self.bin_path = str(bin_path)
        self.block_size = block_size
        self.batch_size = batch_size
        self.num_batches = num_batches
        self.rank = rank
        self.world_size = world_size
        self.seed = seed

    def _offsets(self, n_tokens: int) -> np.ndarray:
        high = n_tokens - self.block_size
        if self.num_batches is None:
            return np.arange(0, high, self.block_size)
        rng = np.random.default_rng(self.seed)
        return rng.integers(0, high, size=self.num_batches * self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        data = np.memmap(self.bin_path, dtype=TOKEN_DTYPE, mode="r")
        offsets = self._offsets(len(data))
        batches = [offsets[i : i + self.batch_size] for i in range(0, len(offsets), self.batch_size)]
        for chunk in batches[self.rank :: self.world_size]:
            yield _windows(data, chunk, self.block_size)


class TextDataModule(L.LightningDataModule):
    """A text corpus as token windows: prepares ``data_dir`` once, then streams from it.

    Args:
        data_dir: folder holding ``input.txt`` (or a download of it), the token files and meta.json.
        path: the text to train on; defaults to ``data_dir/input.txt``.
        url, md5: where to download ``input.txt`` from when it is missing, and its checksum.
        tokenizer: ``char`` or ``gpt2``.
        block_size: tokens per window (the model's context).
        batch_size: windows per batch, per device.
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
        tokenizer: str = "char",
        val_fraction: float = 0.1,
        block_size: int = 256,
        batch_size: int = 64,
        eval_batches: int | None = 200,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 1337,
    ) -> None:
        super().__init__()
        for name, value in (("block_size", block_size), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"data.{name} must be a positive integer, got {value!r}; set data.{name}=...")
        if eval_batches is not None and (not isinstance(eval_batches, int) or eval_batches < 1):
            raise ValueError(
                f"data.eval_batches must be a positive integer or null (whole val split), got {eval_batches!r}"
            )
        self.data_dir = Path(data_dir)
        self.path = path
        self.url = url
        self.md5 = md5
        self.tokenizer_kind = tokenizer
        self.val_fraction = val_fraction
        self.block_size = block_size
        self.batch_size = batch_size
        self.eval_batches = eval_batches
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = seed
        self._meta: dict | None = None

    def prepare_data(self) -> None:
        self._meta = prepare_corpus(
            self.data_dir, self.path, self.url, self.md5, self.tokenizer_kind, self.val_fraction
        )

    @property
    def meta(self) -> dict:
        if self._meta is None:
            # another process (e.g. DDP rank 0) prepared the folder
            self._meta = read_meta(self.data_dir)
            if self._meta is None:
                raise RuntimeError(f"{self.data_dir} is not prepared; call prepare_data() first")
        return self._meta

    @property
    def vocab_size(self) -> int:
        return self.meta["tokenizer"]["vocab_size"]

    @property
    def tokenizer(self) -> Tokenizer:
        return tokenizer_from_meta(self.meta["tokenizer"])

    def setup(self, stage: str | None = None) -> None:
        for split in ("train", "val"):
            n = self.meta[f"{split}_tokens"]
            if n < self.block_size + 1:
                raise ValueError(
                    f"the {split} split of {self.meta['source']} has {n} tokens, fewer than "
                    f"block_size + 1 = {self.block_size + 1}. Use a longer text or a smaller "
                    f"model.block_size (at most {n - 1})"
                )

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
            TrainWindows(self.data_dir / "train.bin", self.block_size, self.batch_size, self.seed, rank, start)
        )

    def eval_dataset(self, split: str = "val", num_batches: int | None = None) -> EvalWindows:
        rank, world = self._rank()
        return EvalWindows(self.data_dir / f"{split}.bin", self.block_size, self.batch_size, num_batches, rank, world)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.eval_dataset("val", self.eval_batches))
