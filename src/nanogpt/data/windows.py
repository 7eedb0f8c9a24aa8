"""Random and fixed token windows over a memmap of token ids, as ``IterableDataset``s.

Datasets yield whole batches ``(x, y)`` of shape ``(batch_size, block_size)`` where ``y`` is ``x``
shifted left by one token. Each batch is one fancy-indexed read of the memmap, so the corpus never
has to fit in RAM and there is no per-sample collate work. Plain PyTorch and NumPy: no Lightning.

``dtype`` is the token files' own, from their ``meta.json`` (``corpus.meta.dtype``): uint16, or
uint32 for a vocabulary larger than 65,536.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from nanogpt.data.corpus import Corpus

Batch = tuple[torch.Tensor, torch.Tensor]


def check_split_fits(corpus: Corpus, split: str, block_size: int) -> None:
    """Refuse a prepared split too short for one window of ``block_size``, saying what would fit."""
    n = corpus.num_tokens(split)
    needed = block_size + 1  # a window's inputs and its targets, shifted by one
    if n >= needed:
        return
    meta = corpus.meta
    total = meta.train_tokens + meta.val_tokens
    fixes = ["give a longer text"]
    if n >= 2:
        fixes.append(f"a smaller model.block_size (at most {n - 1})")
    if total >= 2 * needed:  # another split of the same tokens would give each side a window
        fixes.append(
            f"a {'larger' if split == 'val' else 'smaller'} data.val_fraction (now {meta.val_fraction:g})"
        )
    raise ValueError(
        f"the {split} split of {meta.source} has {n} token{'s' * (n != 1)}, fewer than block_size + 1 = "
        f"{needed}, the tokens of one window (the whole corpus has {total}: {meta.train_tokens} train, "
        f"{meta.val_tokens} val). Fix: {', or '.join(fixes)}"
    )


def _open(path: str, dtype: str) -> np.ndarray:
    return np.memmap(path, dtype=dtype, mode="r")


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

    def __init__(
        self,
        bin_path: str | os.PathLike,
        block_size: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        start_batch: int = 0,
        *,
        dtype: str,
    ) -> None:
        super().__init__()
        self.bin_path = str(bin_path)
        self.dtype = dtype
        self.block_size = block_size
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.start_batch = start_batch

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        high = len(_open(self.bin_path, self.dtype)) - self.block_size  # the last start with a target
        i = self.start_batch + worker
        while True:
            rng = np.random.default_rng([self.seed, self.rank, i])
            # mapped anew for each batch, as nanoGPT does: the pages one map has touched count as this
            # process's memory until it is dropped, so one map held for the whole run would grow
            # towards the size of train.bin
            data = _open(self.bin_path, self.dtype)
            yield _windows(data, rng.integers(0, high, size=self.batch_size), self.block_size)
            i += num_workers


class EvalWindows(IterableDataset):
    """A fixed list of windows, split across ranks.

    With ``num_batches`` set, the windows are drawn from a generator with a fixed seed, so one
    checkpoint always gets the same loss. With ``num_batches=None`` the whole split is covered by
    non-overlapping windows: every token after the first ``block_size`` of a window is scored once.
    """

    def __init__(
        self,
        bin_path: str | os.PathLike,
        block_size: int,
        batch_size: int,
        num_batches: int | None,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        *,
        dtype: str,
    ) -> None:
        super().__init__()
        self.bin_path = str(bin_path)
        self.dtype = dtype
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
        offsets = self._offsets(len(_open(self.bin_path, self.dtype)))
        batches = [offsets[i : i + self.batch_size] for i in range(0, len(offsets), self.batch_size)]
        for chunk in batches[self.rank :: self.world_size]:
            yield _windows(_open(self.bin_path, self.dtype), chunk, self.block_size)  # see TrainWindows
