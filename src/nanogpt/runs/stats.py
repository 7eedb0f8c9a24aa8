"""Seed statistics of a sweep: its jobs grouped by configuration, with a confidence interval each.

Jobs that differ only in their ``seed`` override are one configuration (:func:`seed_statistics`);
the mean of their best val/loss comes with the half-width of its 95% confidence interval, Student's
t with n - 1 degrees of freedom (:func:`mean_ci`), and with the configuration's mean wall time and
parameter count. Each configuration's difference from a baseline configuration (:class:`Baseline`:
:func:`default_baseline`, or :func:`parse_baseline` of ``--baseline``) comes with Welch's t-interval
(:func:`welch_ci`). No I/O: jobs in, numbers out, for the report (:mod:`nanogpt.runs.render`) and
for notebooks.
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
    wall_time_s: float | None = None  # the mean of its jobs' wall times (result.json), when known
    parameters: int | None = None  # its model's trainable parameters, when recorded


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


def welch_ci(a: ConfigStats, b: ConfigStats, confidence: float = 0.95) -> tuple[float, float, float]:
    """``a.mean - b.mean``, the half-width of its ``confidence`` interval, and its degrees of freedom.

    Welch's t-interval: the two configurations' seeds are independent samples whose variances may
    differ (an ablation can make training less stable), so the standard error is
    ``sqrt(sa²/na + sb²/nb)`` and the degrees of freedom Welch-Satterthwaite's. The half-width is nan
    when either has a single seed (no variance to go on); 0 when neither varies at all.
    """
    diff = a.mean - b.mean
    if a.n < 2 or b.n < 2:
        return diff, math.nan, math.nan
    va, vb = a.std**2 / a.n, b.std**2 / b.n  # squared standard errors of the two means
    if va + vb == 0:
        return diff, 0.0, math.inf
    df = (va + vb) ** 2 / (va**2 / (a.n - 1) + vb**2 / (b.n - 1))
    return diff, student_t_quantile(1 - (1 - confidence) / 2, df) * math.sqrt(va + vb), df


def student_t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t distribution with ``df`` degrees of freedom, ``p`` in (0.5, 1).

    ``df`` need not be whole (Welch's degrees of freedom are not).

    Inverts the distribution function ``F(t) = 1 - I_x(df/2, 1/2) / 2`` with ``x = df / (df + t^2)``
    by bisection, to about 1e-12. Written here rather than taken from SciPy: Lightning imports
    torchmetrics, which imports ``scipy.signal`` whenever SciPy is installed, and that costs every
    ``nanogpt-train`` start about half a second.
    """
    if not 0.5 < p < 1 or not df > 0:
        raise ValueError(f"need 0.5 < p < 1 and df > 0, got p={p} and df={df}")
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


def config_keys(varying: Sequence[str]) -> list[str]:
    """The ``varying`` override keys that tell configurations apart: all but ``seed``."""
    return [k for k in varying if k.lstrip("+~") != SEED_KEY]


def seed_statistics(jobs: Sequence[Job]) -> list[ConfigStats]:
    """Group completed jobs by their overrides other than ``seed``; best val/loss per group, best first."""
    varying, _ = varying_keys(jobs)
    keys = config_keys(varying)
    groups: dict[tuple[tuple[str, str | None], ...], list[Job]] = {}
    for job in jobs:
        if job.scored:
            config = tuple((k, job.params.get(k)) for k in keys)
            groups.setdefault(config, []).append(job)
    stats = []
    for config, members in groups.items():
        mean, std, half = mean_ci([j.best_val_loss for j in members])
        walls = [j.wall_time_s for j in members if j.wall_time_s is not None]
        counts = [j.parameters for j in members if j.parameters is not None]
        stats.append(
            ConfigStats(
                {k: v for k, v in config if v is not None},
                len(members),
                mean,
                std,
                half,
                wall_time_s=statistics.fmean(walls) if walls else None,
                parameters=counts[0] if counts else None,  # the seeds share the architecture
            )
        )
    return sorted(stats, key=lambda s: s.mean)


@dataclass(frozen=True)
class Baseline:
    """What each configuration is compared with: itself with ``key=value`` instead of its own value.

    In a sweep over one key (``ablation=gpt2,rope,...``) that is one configuration for all; in a
    grid over several (``ablation=gpt2,rope optimizer.lr=1e-3,3e-3``), each is compared with the
    baseline at its own values of the other keys.
    """

    key: str  # as the overrides spell it (``+foo`` keeps its ``+``)
    value: str

    def __str__(self) -> str:
        return f"{self.key}={self.value}"

    def of(self, config: ConfigStats, stats: Sequence[ConfigStats]) -> ConfigStats | None:
        """The configuration of ``stats`` that ``config`` is compared with (None: none completed yet)."""
        wanted = {**config.params, self.key: self.value}
        return next((s for s in stats if s.params == wanted), None)


def sweep_choices(jobs: Sequence[Job]) -> dict[str, list[str]]:
    """Each override key that tells configurations apart, with its values in the order the jobs have them."""
    varying, _ = varying_keys(jobs)
    choices: dict[str, list[str]] = {k: [] for k in config_keys(varying)}
    for job in jobs:
        for key, values in choices.items():
            value = job.params.get(key)
            if value is not None and value not in values:
                values.append(value)
    return choices


def default_baseline(jobs: Sequence[Job]) -> Baseline | None:
    """The first varying key at its first job's value: in a grid sweep, the first value listed.

    ``jobs`` in the sweep's order (:func:`nanogpt.runs.report.find_jobs`): Hydra runs a grid in the
    order of its overrides' values, so for ``ablation=gpt2,rope,...`` this is ``ablation=gpt2``.
    None when the sweep varies nothing but the seed.
    """
    choices = sweep_choices(jobs)
    key = next(iter(choices), None)
    return Baseline(key, choices[key][0]) if key is not None else None


def parse_baseline(text: str, jobs: Sequence[Job]) -> Baseline:
    """``--baseline KEY=VALUE`` checked against the sweep: a ``ValueError`` lists the valid choices."""
    choices = sweep_choices(jobs)
    if not choices:
        raise ValueError(
            f"--baseline {text}: the sweep varies no override but seed, so there is no configuration "
            "to compare with; leave out --baseline"
        )
    listing = ", ".join(f"{k}={v}" for k, values in choices.items() for v in values)
    key, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"--baseline {text} is not KEY=VALUE; choose one of {listing}")
    # +key and key are one override to a reader; seed is what the statistics average over
    key = next((k for k in choices if k.lstrip("+~") == key.lstrip("+~")), key)
    if key not in choices:
        why = (
            "seed is what each configuration averages over"
            if key.lstrip("+~") == SEED_KEY
            else (f"{key} is not an override the sweep varies")
        )
        raise ValueError(f"--baseline {text}: {why}; choose one of {listing}")
    found = next((v for v in choices[key] if _same_value(v, value)), None)
    if found is None:
        raise ValueError(
            f"--baseline {text}: no job of the sweep has {key}={value}; choose one of "
            + ", ".join(f"{key}={v}" for v in choices[key])
        )
    return Baseline(key, found)


def _same_value(a: str, b: str) -> bool:
    # optimizer.lr=1e-3 and optimizer.lr=0.001 are one configuration to a reader
    if a == b:
        return True
    try:
        return float(a) == float(b)
    except ValueError:
        return False
