"""``nanogpt-report``: one sweep folder as a table, a plot of its val-loss curves and seed statistics.

    nanogpt-report runs/shakespeare_char_cpu/multirun_2026-11-25_10-00-00

reads every job folder's ``result.json`` (:mod:`nanogpt.runs.record`) and writes into the sweep folder

- ``report.md``: every job's varying overrides, best ``val/loss``, last ``val/bleu``, steps, wall
  time and status, best first; failed jobs last, with their errors; and, when the sweep repeats a
  configuration over seeds, the mean best ``val/loss`` of each configuration with its 95%
  confidence interval;
- ``report.csv`` (one row per job) and ``seeds.csv`` (one row per configuration, when seeds repeat);
- ``val_loss.png``: every job's val-loss curve.

``nanogpt-train -m`` writes the report after every job and at the end (:mod:`nanogpt.runs.sweep`).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import socket
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from nanogpt.files import write_atomically
from nanogpt.runs import RESULT_FILE

SEED_KEY = "seed"


def read_result(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The run's ``result.json``, or ``None`` when it has none or it cannot be parsed."""
    try:
        result = json.loads((Path(run_dir) / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) else None


def is_alive(result: dict[str, Any]) -> bool:
    """Whether the process that wrote a ``running`` result may still run.

    On this machine the process is looked up by its pid; another machine's job cannot be checked
    from here, so it counts as alive.
    """
    pid = result.get("pid")
    if not isinstance(pid, int):
        return False
    if result.get("host") != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, but belongs to another user
    return True


@dataclass
class Job:
    """One job folder of a sweep, as its ``result.json`` (or its absence) describes it."""

    name: str
    status: str  # completed, interrupted, failed or running
    overrides: list[str]
    best_val_loss: float | None = None
    val_bleu: float | None = None
    step: int | None = None
    wall_time_s: float | None = None
    error: str | None = None
    val_curve: list[tuple[int, float]] = field(default_factory=list)

    @property
    def scored(self) -> bool:
        """Completed with a finite best val/loss: ranked, and counted in seed statistics."""
        loss = self.best_val_loss
        return self.status == "completed" and loss is not None and math.isfinite(loss)

    @property
    def params(self) -> dict[str, str]:
        """The overrides as ``key -> value`` (a group choice such as ``model=gpt_tiny`` included)."""
        return dict(o.split("=", 1) if "=" in o else (o, "") for o in self.overrides)


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
    from scipy.stats import t

    std = statistics.stdev(values)
    half = float(t.ppf(1 - (1 - confidence) / 2, len(values) - 1)) * std / math.sqrt(len(values))
    return mean, std, half


def _natural_key(name: str) -> list[Any]:
    # job folders 0, 1, ..., 10 in numeric order, not 0, 1, 10, 2
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _read_overrides(job_dir: Path) -> list[str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    return [str(o) for o in OmegaConf.load(path)]


def load_job(job_dir: Path) -> Job:
    """Read one job folder; a job that left no final result is ``failed`` unless it still runs."""
    result = read_result(job_dir) or {}
    status = result.get("status")
    error = result.get("error")
    if status not in ("completed", "failed", "interrupted"):
        if status == "running" and is_alive(result):
            status = "running"
        else:
            status = "failed"
            error = "stopped without a result (killed, out of memory, or the machine went down)"
    history = result.get("history") or {}
    val_curve = [(int(s), float(v)) for s, v in history.get("val/loss", [])]
    best = result.get("best_val_loss")
    if best is None and val_curve:
        best = min(v for _, v in val_curve)
    metrics = result.get("metrics") or {}
    bleu = metrics.get("val/bleu")
    if bleu is None and history.get("val/bleu"):
        bleu = history["val/bleu"][-1][1]
    return Job(
        name=job_dir.name,
        status=status,
        overrides=list(result.get("overrides") or _read_overrides(job_dir)),
        best_val_loss=best,
        val_bleu=bleu,
        step=result.get("step"),
        wall_time_s=result.get("wall_time_s"),
        error=error,
        val_curve=val_curve,
    )


def find_jobs(sweep_dir: str | os.PathLike) -> list[Job]:
    """Every job folder of ``sweep_dir``: a sub-folder holding ``result.json`` or Hydra's ``.hydra/``."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(
            f"no sweep folder at {sweep_dir}; pass the folder of a multirun, "
            "e.g. runs/<experiment>/multirun_<time> (nanogpt-train -m prints it)"
        )
    folders = [
        p
        for p in sweep_dir.iterdir()
        if p.is_dir() and ((p / RESULT_FILE).is_file() or (p / ".hydra" / "overrides.yaml").is_file())
    ]
    if not folders:
        hint = " (that is a single run's folder)" if (sweep_dir / RESULT_FILE).is_file() else ""
        raise FileNotFoundError(
            f"{sweep_dir} holds no job folders{hint}; pass the folder of a multirun, "
            "e.g. runs/<experiment>/multirun_<time>, whose sub-folders are its jobs"
        )
    return [load_job(p) for p in sorted(folders, key=lambda p: _natural_key(p.name))]


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


def _rank(job: Job) -> tuple[Any, ...]:
    return (not job.scored, job.best_val_loss if job.scored else 0.0, _natural_key(job.name))


def _fmt(value: float | int | None, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _short(value: str) -> str:
    # Optuna's suggestions carry 17 digits; 4 significant ones are enough to read a table
    if re.fullmatch(r"[-+]?\d*\.\d{5,}(e[-+]?\d+)?|[-+]?\d+(\.\d+)?e[-+]?\d+", value):
        return f"{float(value):.4g}"
    return value


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(r) for r in rows)])


def _csv(header: list[str], rows: list[list[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def render(sweep_dir: Path, jobs: Sequence[Job]) -> tuple[str, str, str | None]:
    """The report as Markdown, the jobs as CSV, and the seed statistics as CSV (or None)."""
    jobs = sorted(jobs, key=_rank)
    varying, common = varying_keys(jobs)
    counts = {s: sum(j.status == s for j in jobs) for s in ("completed", "interrupted", "failed", "running")}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    md = [f"# Sweep report: {sweep_dir}", "", f"{len(jobs)} jobs: {summary}. Sorted by best val/loss.", ""]
    if common:
        md += ["Common overrides: " + " ".join(f"`{k}={v}`" for k, v in common.items()), ""]

    header = ["rank", "job", *varying, "best val/loss", "val/bleu", "steps", "wall time (s)", "status"]
    rows, csv_rows = [], []
    for i, job in enumerate(jobs, 1):
        values = [job.params.get(k, "") for k in varying]
        rows.append(
            [
                str(i),
                job.name,
                *map(_short, values),
                _fmt(job.best_val_loss, 4),
                _fmt(job.val_bleu, 2),
                _fmt(job.step, 0),
                _fmt(job.wall_time_s, 1),
                job.status,
            ]
        )
        csv_rows.append(
            [
                i,
                job.name,
                *values,
                job.best_val_loss,
                job.val_bleu,
                job.step,
                job.wall_time_s,
                job.status,
                " ".join(job.overrides),
                job.error or "",
            ]
        )
    md += [_markdown_table(header, rows), ""]
    csv_header = ["rank", "job", *varying, "best_val_loss", "val_bleu", "steps", "wall_time_s", "status"]
    jobs_csv = _csv([*csv_header, "overrides", "error"], csv_rows)

    failed = [j for j in jobs if j.status in ("failed", "interrupted")]
    if failed:
        md += (
            ["## Failed jobs", ""]
            + [f"- `{_label(j, varying)}` ({j.status}): {j.error}" for j in failed]
            + [""]
        )

    seeds_csv = None
    stats = seed_statistics(jobs)
    if any(s.n > 1 for s in stats):
        keys = [k for k in varying if k.lstrip("+~") != SEED_KEY]
        md += [
            "## Over seeds",
            "",
            "Best val/loss of each configuration over its seeds: mean ± half-width of the 95% "
            "confidence interval of the mean (Student's t, n - 1 degrees of freedom).",
            "",
        ]
        seed_rows = [
            [
                *(_short(s.params.get(k, "")) for k in keys),
                str(s.n),
                f"{s.mean:.4f} ± {s.ci95:.4f}" if s.n > 1 else f"{s.mean:.4f}",
                _fmt(s.mean - s.ci95, 4),
                _fmt(s.mean + s.ci95, 4),
                _fmt(s.std, 4),
            ]
            for s in stats
        ]
        md += [_markdown_table([*keys, "seeds", "mean ± 95% CI", "low", "high", "std"], seed_rows), ""]
        seeds_csv = _csv(
            [*keys, "n", "mean", "ci95_half_width", "low", "high", "std"],
            [
                [
                    *(s.params.get(k, "") for k in keys),
                    s.n,
                    s.mean,
                    s.ci95,
                    s.mean - s.ci95,
                    s.mean + s.ci95,
                    s.std,
                ]
                for s in stats
            ],
        )
    md += ["![val/loss of every job](val_loss.png)", ""]
    return "\n".join(md), jobs_csv, seeds_csv


def _label(job: Job, varying: list[str]) -> str:
    values = " ".join(f"{k}={job.params[k]}" for k in varying if k in job.params)
    return f"{job.name}: {values}" if values else job.name


def write_report(sweep_dir: str | os.PathLike) -> Path:
    """Write ``report.md``, ``report.csv``, ``val_loss.png`` (and ``seeds.csv``) into ``sweep_dir``."""
    from nanogpt.runs.plots import plot_sweep  # matplotlib only when a report is written

    sweep_dir = Path(sweep_dir)
    jobs = find_jobs(sweep_dir)
    md, jobs_csv, seeds_csv = render(sweep_dir, jobs)
    varying, _ = varying_keys(jobs)
    plot_sweep(
        {_label(j, varying): j.val_curve for j in jobs}, sweep_dir / "val_loss.png", title=str(sweep_dir)
    )
    write_atomically(sweep_dir / "report.csv", jobs_csv)
    if seeds_csv is not None:
        write_atomically(sweep_dir / "seeds.csv", seeds_csv)
    return write_atomically(sweep_dir / "report.md", md)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nanogpt-report",
        description="Tabulate and plot the jobs of a nanogpt-train -m sweep folder; "
        "writes report.md, report.csv, val_loss.png (and seeds.csv) into it.",
    )
    parser.add_argument("sweep_dir", type=Path, help="e.g. runs/shakespeare_char_cpu/multirun_<time>")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.sweep_dir)
    except FileNotFoundError as err:
        parser.exit(2, f"nanogpt-report: {err}\n")
    sys.stdout.write(path.read_text())
    print(f"\nwritten: {path}, {path.with_name('report.csv')}, {path.with_name('val_loss.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
