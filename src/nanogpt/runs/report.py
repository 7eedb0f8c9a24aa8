"""``nanogpt-report``: one sweep folder as a table, a plot of its val-loss curves and seed statistics.

    nanogpt-report runs/shakespeare_char_cpu/multirun_2026-11-25_10-00-00_5be21d

reads every job folder's ``result.json`` (written by :mod:`nanogpt.runs.record`, read by
:mod:`nanogpt.runs.jobs`) and the sweep's plan, ``sweep.json`` (:mod:`nanogpt.runs.plan`), and writes
into the sweep folder

- ``report.md``: every job's varying overrides, best ``val/loss``, last ``val/bleu``, steps, wall
  time and status, best first; failed and interrupted jobs with their errors; the planned jobs
  that never ran (the sweep was interrupted, or stopped at a job's error) or are still to run;
  and, when the sweep repeats a configuration over seeds, the mean best ``val/loss`` of each
  configuration with its 95% confidence interval;
- ``report.csv`` (one row per job, planned grid jobs that never ran included) and ``seeds.csv``
  (one row per configuration, when seeds repeat);
- ``val_loss.png``: every job's val-loss curve.

This module finds a sweep folder's jobs (:func:`find_jobs`) and writes the files; their text comes
from :mod:`nanogpt.runs.render`, the seed statistics from :mod:`nanogpt.runs.stats`.

``nanogpt-train -m`` writes the report after every job and when the sweep ends, interrupted or not
(:mod:`nanogpt.runs.sweep`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from nanogpt.files import write_atomically
from nanogpt.run_dir import RESULT_FILE
from nanogpt.runs.jobs import UNRUN, Job, is_job_folder, load_job, natural_key
from nanogpt.runs.plan import Plan, unrun_grid_jobs
from nanogpt.runs.render import job_label, render
from nanogpt.runs.stats import varying_keys


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


def write_report(sweep_dir: str | os.PathLike) -> Path:
    """Write ``report.md``, ``report.csv``, ``val_loss.png`` (and ``seeds.csv``) into ``sweep_dir``."""
    from nanogpt.runs.plots import plot_sweep  # matplotlib only when a report is written

    sweep_dir = Path(sweep_dir)
    plan = Plan.load(sweep_dir)
    jobs = find_jobs(sweep_dir, plan)
    md, jobs_csv, seeds_csv = render(sweep_dir, jobs, plan)
    varying, _ = varying_keys(jobs)
    curves = {job_label(j, varying): j.val_curve for j in jobs if j.status not in UNRUN}
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
