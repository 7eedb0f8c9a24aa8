"""The sweep report as text: ``report.md``, ``report.csv`` and ``seeds.csv`` (:func:`render`).

Jobs (:mod:`nanogpt.runs.jobs`) and the sweep's plan (:mod:`nanogpt.runs.plan`) in, text out: no
file is read or written here (:mod:`nanogpt.runs.report` does that). The one look outside is the
plan's, at whether the sweep's process still runs, which tells jobs still to run from jobs that
never ran.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nanogpt.runs.jobs import STATUSES, UNRUN, Job, natural_key
from nanogpt.runs.plan import Plan, unrun_trials
from nanogpt.runs.stats import (
    Baseline,
    ConfigStats,
    config_keys,
    default_baseline,
    seed_statistics,
    varying_keys,
    welch_ci,
)

TIME_PLOT = "val_loss_vs_time.png"  # val/loss against wall time per configuration, when seeds repeat


def _rank(job: Job) -> tuple[Any, ...]:
    unrun = job.status in UNRUN
    return (unrun, not job.scored, job.best_val_loss if job.scored else 0.0, natural_key(job.name))


def _status(status: str) -> str:
    return {"never_ran": "never ran", "pending": "still to run"}.get(status, status)


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


def render(
    sweep_dir: Path, jobs: Sequence[Job], plan: Plan | None = None, baseline: Baseline | None = None
) -> tuple[str, str, str | None]:
    """The report as Markdown, the jobs as CSV, and the seed statistics as CSV (or None).

    ``jobs`` in the sweep's order; ``baseline`` is what the seed statistics compare each
    configuration with, by default :func:`~nanogpt.runs.stats.default_baseline`.
    """
    chosen = baseline is not None
    baseline = baseline or default_baseline(jobs)
    jobs = sorted(jobs, key=_rank)
    varying, common = varying_keys(jobs)
    counts = {s: sum(j.status == s for j in jobs) for s in STATUSES}
    trials_left = unrun_trials(jobs, plan)
    if trials_left:
        counts[plan.unrun_status] += trials_left
    summary = ", ".join(f"{n} {_status(s)}" for s, n in counts.items() if n)
    head = f"{sum(counts.values())} jobs planned" if plan is not None else f"{len(jobs)} jobs"
    md = [f"# Sweep report: {sweep_dir}", "", f"{head}: {summary}. Sorted by best val/loss.", ""]
    if common:
        md += ["Common overrides: " + " ".join(f"`{k}={v}`" for k, v in common.items()), ""]

    header = ["rank", "job", *varying, "best val/loss", "val/bleu", "steps", "wall time (s)", "status"]
    rows, csv_rows = [], []
    for i, job in enumerate(jobs, 1):
        rank = "" if job.status in UNRUN else str(i)  # unrun jobs come last
        values = [job.params.get(k, "") for k in varying]
        rows.append(
            [
                rank,
                job.name,
                *map(_short, values),
                _fmt(job.best_val_loss, 4),
                _fmt(job.val_bleu, 2),
                _fmt(job.step, 0),
                _fmt(job.wall_time_s, 1),
                job.error if job.status == "pruned" and job.error else _status(job.status),
            ]
        )
        csv_rows.append(
            [
                rank,
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
        kinds = {j.status for j in failed}
        title = "Failed and interrupted jobs" if len(kinds) > 1 else f"{kinds.pop().capitalize()} jobs"
        items = [f"- `{job_label(j, varying)}` ({j.status}): {j.error}" for j in failed]
        md += [f"## {title}", "", *items, ""]
    md += _unrun_section(jobs, varying, plan, trials_left)

    seeds_csv = None
    stats = seed_statistics(jobs)
    if seeds_repeat(stats):
        seeds_md, seeds_csv = _seeds_section(stats, config_keys(varying), baseline, chosen)
        md += seeds_md
    md += ["![val/loss of every job](val_loss.png)", ""]
    return "\n".join(md), jobs_csv, seeds_csv


def seeds_repeat(stats: Sequence[ConfigStats]) -> bool:
    """Whether the report has its over-seeds section (and nanogpt-report its time plot)."""
    return any(s.n > 1 for s in stats)


def _seeds_section(
    stats: list[ConfigStats], keys: list[str], baseline: Baseline | None, chosen: bool
) -> tuple[list[str], str]:
    """The over-seeds section of report.md, and seeds.csv."""
    md = [
        "## Over seeds",
        "",
        "Best val/loss of each configuration over its seeds: mean ± half-width of the 95% "
        "confidence interval of the mean (Student's t, n - 1 degrees of freedom).",
        "",
    ]
    compared = {id(s): baseline.of(s, stats) if baseline else None for s in stats}
    if baseline is not None:
        how = (
            "named with --baseline"
            if chosen
            else f"by default the first value the sweep lists of its first varying override; choose "
            f"another with `nanogpt-report <sweep> --baseline {baseline.key}=<value>`"
        )
        others = (
            f" Each configuration is compared with the one that has `{baseline}` and its own values of "
            "the other overrides."
            if len(keys) > 1
            else ""
        )
        missing = (
            f" No configuration with `{baseline}` has completed yet, so there is no difference to show."
            if not any(compared.values())
            else ""
        )
        md += [
            f"Δ: the difference of each mean from the baseline's, `{baseline}` ({how}), ± the half-width "
            "of its 95% confidence interval: Welch's t-interval (each configuration's seeds an independent "
            "sample with its own variance, Welch-Satterthwaite degrees of freedom). Below 0: a lower "
            f"val/loss than the baseline; in bold: the interval leaves out 0.{others}{missing}",
            "",
        ]
    md += [
        "Wall time: the mean of the jobs' whole runs (result.json's wall_time_s: setup, training and "
        "validations). Parameters: every trainable one, a tied embedding once, position embeddings "
        "included.",
        "",
    ]
    header = [*keys, "seeds", "mean ± 95% CI", "low", "high", "std"]
    if baseline is not None:
        header.append(f"Δ vs {baseline} ± 95% CI (Welch)")
    header += ["mean wall time (s)", "parameters"]
    rows, csv_rows = [], []
    for s in stats:
        base = compared[id(s)]
        diff, half, df = welch_ci(s, base) if base is not None else (math.nan, math.nan, math.nan)
        if base is s:
            half = df = math.nan  # the baseline against itself: 0, with no interval to speak of
        row = [
            *(_short(s.params.get(k, "")) for k in keys),
            str(s.n),
            f"{s.mean:.4f} ± {s.ci95:.4f}" if s.n > 1 else f"{s.mean:.4f}",
            _fmt(s.mean - s.ci95, 4),
            _fmt(s.mean + s.ci95, 4),
            _fmt(s.std, 4),
        ]
        if baseline is not None:
            row.append(_difference(diff, half, is_baseline=base is s))
        rows.append([*row, _fmt(s.wall_time_s, 1), f"{s.parameters:,}" if s.parameters is not None else ""])
        csv_rows.append(
            [
                *(s.params.get(k, "") for k in keys),
                s.n,
                s.mean,
                s.ci95,
                s.mean - s.ci95,
                s.mean + s.ci95,
                s.std,
                s.wall_time_s,
                s.parameters,
                " ".join(f"{k}={v}" for k, v in base.params.items()) if base is not None else "",
                diff,
                half,
                diff - half,
                diff + half,
                df,
            ]
        )
    md += [_markdown_table(header, rows), ""]
    md += [
        f"{TIME_PLOT}: val/loss against seconds of training (perf/train_s in each job's csv/metrics.csv), "
        "each seed a thin line and their mean a thick one.",
        "",
        f"![val/loss against wall time, per configuration]({TIME_PLOT})",
        "",
    ]
    seeds_csv = _csv(
        [
            *keys,
            *("n", "mean", "ci95_half_width", "low", "high", "std", "mean_wall_time_s", "parameters"),
            *("baseline", "diff", "diff_ci95_half_width", "diff_low", "diff_high", "diff_df"),
        ],
        csv_rows,
    )
    return md, seeds_csv


def _difference(diff: float, half: float, is_baseline: bool) -> str:
    if is_baseline:
        return "baseline"
    if math.isnan(diff):
        return ""  # its baseline has no completed job yet
    if math.isnan(half):
        return f"{diff:+.4f}"  # a single seed on one side: no interval
    text = f"{diff:+.4f} ± {half:.4f}"
    return f"**{text}**" if abs(diff) > half else text


def _unrun_section(jobs: Sequence[Job], varying: list[str], plan: Plan | None, trials_left: int) -> list[str]:
    unrun = [j for j in jobs if j.status in UNRUN]
    if plan is None or not (unrun or trials_left):
        return []
    never = plan.unrun_status == "never_ran"
    if trials_left and never:
        text = (
            f"{trials_left} of {plan.trials} trials never ran: the sweep stopped before them. "
            f"Running the same command again continues the study with another {plan.trials} trials."
        )
    elif trials_left:
        text = f"{trials_left} of {plan.trials} trials are still to run."
    elif never:
        text = (
            "The sweep stopped before these jobs started (it was interrupted, or stopped at a job's "
            "error). Each one runs alone as `nanogpt-train` with its overrides (the overrides column "
            "of report.csv)."
        )
    else:
        text = "The sweep runs these jobs next."
    md = ["## Never ran" if never else "## Still to run", "", text, ""]
    if unrun:
        md += [*(f"- `{job_label(j, varying)}`" for j in unrun), ""]
    return md


def job_label(job: Job, varying: list[str]) -> str:
    """The job's name and its values of the ``varying`` overrides, as a list item or a legend shows it."""
    values = " ".join(f"{k}={job.params[k]}" for k in varying if k in job.params)
    return f"{job.name}: {values}" if values else job.name
