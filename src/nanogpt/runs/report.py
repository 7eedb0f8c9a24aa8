"""``nanogpt-report``: one sweep folder as a table, a plot of its val-loss curves and seed statistics.

    nanogpt-report runs/shakespeare_char_cpu/multirun_2026-11-25_10-00-00_5be21d

reads every job folder's ``result.json`` (:mod:`nanogpt.runs.record`) and the sweep's plan,
``sweep.json`` (:class:`Plan`), and writes into the sweep folder

- ``report.md``: every job's varying overrides, best ``val/loss``, last ``val/bleu``, steps, wall
  time and status, best first; failed and interrupted jobs with their errors; the planned jobs
  that never ran (the sweep was interrupted, or stopped at a job's error) or are still to run;
  and, when the sweep repeats a configuration over seeds, the mean best ``val/loss`` of each
  configuration with its 95% confidence interval;
- ``report.csv`` (one row per job, planned grid jobs that never ran included) and ``seeds.csv``
  (one row per configuration, when seeds repeat);
- ``val_loss.png``: every job's val-loss curve.

``nanogpt-train -m`` writes the report after every job and when the sweep ends, interrupted or not
(:mod:`nanogpt.runs.sweep`).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nanogpt.files import write_atomically
from nanogpt.runs import RESULT_FILE
from nanogpt.runs.jobs import STATUSES, UNRUN, Job, is_job_folder, load_job, natural_key
from nanogpt.runs.plan import Plan, unrun_grid_jobs, unrun_trials
from nanogpt.runs.stats import SEED_KEY, seed_statistics, varying_keys


def find_jobs(sweep_dir: str | os.PathLike, plan: Plan | None = None) -> list[Job]:
    """Every job of ``sweep_dir``: its job folders, then the planned grid jobs that have none.

    ``plan`` defaults to the sweep's ``sweep.json``. With a plan, a folder of this command without
    ``result.json`` is a job that Hydra set up but that never started, and counts as not run (a job
    that fails before its record starts gets a ``failed`` result from the sweep callback).
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(
            f"no sweep folder at {sweep_dir}; pass the folder of a multirun, "
            "e.g. runs/<experiment>/multirun_<time> (nanogpt-train -m prints it)"
        )
    plan = plan or Plan.load(sweep_dir)
    folders = [p for p in sweep_dir.iterdir() if is_job_folder(p)]
    if plan is not None:
        earlier = set(plan.earlier_jobs)
        folders = [p for p in folders if (p / RESULT_FILE).is_file() or p.name in earlier]
    if not folders and plan is None:
        hint = " (that is a single run's folder)" if (sweep_dir / RESULT_FILE).is_file() else ""
        raise FileNotFoundError(
            f"{sweep_dir} holds no job folders{hint}; pass the folder of a multirun, "
            "e.g. runs/<experiment>/multirun_<time>, whose sub-folders are its jobs"
        )
    jobs = [load_job(p) for p in sorted(folders, key=lambda p: natural_key(p.name))]
    if plan is not None and plan.jobs is not None:
        jobs += unrun_grid_jobs(jobs, plan)
    return jobs


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


def render(sweep_dir: Path, jobs: Sequence[Job], plan: Plan | None = None) -> tuple[str, str, str | None]:
    """The report as Markdown, the jobs as CSV, and the seed statistics as CSV (or None)."""
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
                _status(job.status),
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
        md += (
            [f"## {title}", ""] + [f"- `{_label(j, varying)}` ({j.status}): {j.error}" for j in failed] + [""]
        )
    md += _unrun_section(jobs, varying, plan, trials_left)

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
        md += [*(f"- `{_label(j, varying)}`" for j in unrun), ""]
    return md


def _label(job: Job, varying: list[str]) -> str:
    values = " ".join(f"{k}={job.params[k]}" for k in varying if k in job.params)
    return f"{job.name}: {values}" if values else job.name


def write_report(sweep_dir: str | os.PathLike) -> Path:
    """Write ``report.md``, ``report.csv``, ``val_loss.png`` (and ``seeds.csv``) into ``sweep_dir``."""
    from nanogpt.runs.plots import plot_sweep  # matplotlib only when a report is written

    sweep_dir = Path(sweep_dir)
    plan = Plan.load(sweep_dir)
    jobs = find_jobs(sweep_dir, plan)
    md, jobs_csv, seeds_csv = render(sweep_dir, jobs, plan)
    varying, _ = varying_keys(jobs)
    curves = {_label(j, varying): j.val_curve for j in jobs if j.status not in UNRUN}
    plot_sweep(curves, sweep_dir / "val_loss.png", title=str(sweep_dir))
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
