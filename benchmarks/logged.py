"""What a nanogpt-train run logged: the rows of its ``csv/metrics.csv`` (``logger=csv``), and the
median of a ``perf/*`` value past its first window, where compiling and warming up are left out."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

from nanogpt.runs.folder import RunDir


def metrics(run_dir: Path) -> list[dict[str, str]]:
    with RunDir.at(run_dir).metrics_csv.open() as f:
        return list(csv.DictReader(f))


def values(rows: list[dict[str, str]], key: str) -> list[float]:
    """``key``'s values, in the order logged, from the rows that have one."""
    return [float(r[key]) for r in rows if r.get(key)]


def median_after_first_window(rows: list[dict[str, str]], key: str) -> float | None:
    logged = values(rows, key)
    later = logged[1:] or logged
    return statistics.median(later) if later else None
