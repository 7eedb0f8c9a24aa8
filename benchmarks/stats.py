"""Repeats that alternate, and what a table says of them: the median and the range.

A machine's speed drifts (other work, heat, a new day's CPU), so candidates are never timed one
after the other in blocks: :func:`alternate` runs one of each per round, round after round, and
a slowdown hits them all alike. A ratio per round (:func:`ratios`) is what carries over between
machines and days; :class:`Spread` is how every table writes a median and its min-max.
"""

from __future__ import annotations

import random
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


def alternate(
    candidates: Sequence[str],
    rounds: int,
    measure: Callable[[str, int], T],
    *,
    show: Callable[[T], str] | None = None,
    shuffle: random.Random | None = None,
    warmup: int = 0,
) -> dict[str, list[T]]:
    """``measure(candidate, round)`` for every candidate in every round; the values by candidate.

    ``shuffle`` draws a new order each round (no candidate always first, or always right after the
    same one); ``warmup`` rounds (numbered from ``-warmup``) run first and are dropped; ``show``
    prints one line per round.
    """
    measured: dict[str, list[T]] = {name: [] for name in candidates}
    order = list(candidates)
    for r in range(-warmup, rounds):
        if shuffle is not None:
            shuffle.shuffle(order)
        values = {name: measure(name, r) for name in order}
        if r < 0:
            continue
        for name in candidates:
            measured[name].append(values[name])
        if show is not None:
            shown = ", ".join(f"{name} {show(values[name])}" for name in candidates)
            print(f"repeat {r + 1}/{rounds}: {shown}", file=sys.stderr, flush=True)
    return measured


def ratios(values: Iterable[float], baseline: Iterable[float]) -> list[float]:
    """``values`` over ``baseline``, round by round."""
    return [v / b for v, b in zip(values, baseline, strict=True)]


@dataclass(frozen=True)
class Spread:
    """The median of some measurements and their range."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        values = list(values)
        return cls(statistics.median(values), min(values), max(values))

    def range(self, digits: int = 1) -> str:
        """``low-high``."""
        return f"{self.low:.{digits}f}-{self.high:.{digits}f}"

    def text(self, digits: int = 1, unit: str = "") -> str:
        """``median<unit> (low-high)``, each with ``digits`` decimals."""
        return f"{self.median:.{digits}f}{unit} ({self.range(digits)})"
