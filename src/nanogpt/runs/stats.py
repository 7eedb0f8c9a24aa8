"""Seed statistics of a sweep: its jobs grouped by configuration, with a confidence interval each.

Jobs that differ only in their ``seed`` override are one configuration (:func:`seed_statistics`);
the mean of their best val/loss comes with the half-width of its 95% confidence interval, Student's
t with n - 1 degrees of freedom (:func:`mean_ci`). No I/O: jobs in, numbers out, for the report
(:mod:`nanogpt.runs.render`) and for notebooks.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only its scored and params: this module reads no job folder
    from nanogpt.runs.jobs import Job

SEED_KEY = "seed"


@dataclass
class ConfigStats:
    """The best val/loss of one configuration over its seeds."""

    params: dict[str, str]
    n: int
    mean: float
    std: float  # sample standard deviation; nan for n = 1
    ci95: float  # half-width of the 95% confidence interval of the mean; nan for n = 1


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean, sample standard deviation and the half-width of the ``confidence`` interval of the mean.

    Student's t interval, ``t(1 - (1 - confidence) / 2, n - 1) * std / sqrt(n)``: with a handful of
    seeds the normal approximation would be far too narrow (t = 2.78 for 5 seeds, not 1.96).
    """
    if not values:
        raise ValueError("mean_ci needs at least one value")
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    std = statistics.stdev(values)
    half = student_t_quantile(1 - (1 - confidence) / 2, len(values) - 1) * std / math.sqrt(len(values))
    return mean, std, half


def student_t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t distribution with ``df`` degrees of freedom, ``p`` in (0.5, 1).

    Inverts the distribution function ``F(t) = 1 - I_x(df/2, 1/2) / 2`` with ``x = df / (df + t^2)``
    by bisection, to about 1e-12. Written here rather than taken from SciPy: Lightning imports
    torchmetrics, which imports ``scipy.signal`` whenever SciPy is installed, and that costs every
    ``nanogpt-train`` start about half a second.
    """
    if not 0.5 < p < 1 or df < 1:
        raise ValueError(f"need 0.5 < p < 1 and df >= 1, got p={p} and df={df}")
    tail = 2 * (1 - p)  # I_x(df/2, 1/2) at the quantile; it falls as t grows
    low, high = 0.0, 1.0
    while _regularized_beta(df / (df + high * high), df / 2, 0.5) > tail:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        if _regularized_beta(df / (df + mid * mid), df / 2, 0.5) > tail:
            low = mid
        else:
            high = mid
        if high - low < 1e-12 * high:
            break
    return (low + high) / 2


def _regularized_beta(x: float, a: float, b: float) -> float:
    """The regularized incomplete beta function ``I_x(a, b)``, by its continued fraction (Lentz)."""
    if x <= 0 or x >= 1:
        return float(x >= 1)
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast only below this point
        return 1 - _regularized_beta(1 - x, b, a)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny = 1e-300
    c, d = 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1) < 1e-15:
            break
    return math.exp(log_front) * fraction / a


def varying_keys(jobs: Sequence[Job]) -> tuple[list[str], dict[str, str]]:
    """The override keys whose values differ between jobs (in order of appearance), and the rest."""
    params = [job.params for job in jobs]
    keys: list[str] = []
    for p in params:
        keys += [k for k in p if k not in keys]
    varying = [k for k in keys if len({p.get(k) for p in params}) > 1]
    common = {k: params[0][k] for k in keys if k not in varying}
    return varying, common


def seed_statistics(jobs: Sequence[Job]) -> list[ConfigStats]:
    """Group completed jobs by their overrides other than ``seed``; best val/loss per group, best first."""
    varying, _ = varying_keys(jobs)
    keys = [k for k in varying if k.lstrip("+~") != SEED_KEY]
    groups: dict[tuple[tuple[str, str | None], ...], list[float]] = {}
    for job in jobs:
        if job.scored:
            config = tuple((k, job.params.get(k)) for k in keys)
            groups.setdefault(config, []).append(job.best_val_loss)
    stats = []
    for config, values in groups.items():
        mean, std, half = mean_ci(values)
        stats.append(ConfigStats({k: v for k, v in config if v is not None}, len(values), mean, std, half))
    return sorted(stats, key=lambda s: s.mean)
