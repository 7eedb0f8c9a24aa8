"""``nanogpt-report``: one sweep folder as a table, a plot of its val-loss curves and seed statistics.

    nanogpt-report runs/shakespeare_char_cpu/multirun_2026-11-25_10-00-00_5be21d
    nanogpt-report runs/ablation/multirun_<time>_<suffix> --baseline ablation=gpt2

reads every job folder's ``result.json`` (written by :mod:`nanogpt.training.record`, read by
:mod:`nanogpt.runs.jobs`) and the sweep's plan, ``sweep.json`` (:mod:`nanogpt.runs.plan`), and writes
into the sweep folder

- ``report.md``: every job's varying overrides, best ``val/loss``, last ``val/bleu``, steps, wall
  time and status, best first; failed and interrupted jobs with their errors; the planned jobs
  that never ran (the sweep was interrupted, or stopped at a job's error) or are still to run;
  and, when the sweep repeats a configuration over seeds, the mean best ``val/loss`` of each
  configuration with its 95% confidence interval, its difference from a baseline configuration
  with Welch's 95% t-interval, its mean wall time and its model's parameter count;
- ``report.csv`` (one row per job, planned grid jobs that never ran included) and ``seeds.csv``
  (one row per configuration, when seeds repeat);
- ``val_loss.png``: every job's val-loss curve; and when seeds repeat ``val_loss_vs_time.png``:
  val/loss against seconds of training, per configuration (each seed thin, their mean thick), from
  each job's ``csv/metrics.csv``.

The baseline is ``--baseline KEY=VALUE``, one value of an override the sweep varies; by default
the first value listed of the first varying override (``ablation=gpt2`` for
``nanogpt-train -m seed=1,2,3 ablation=gpt2,rope,...``), as the report says.

This module finds a sweep folder's jobs (:func:`find_jobs`) and writes the files; their text comes
from :mod:`nanogpt.runs.render`, the seed statistics from :mod:`nanogpt.runs.stats`.

``nanogpt-train -m`` writes the report after every job and when the sweep ends, interrupted or not
(:mod:`nanogpt.sweeps.callback`).

The command line (``nanogpt-report``, and its ``--dashboard`` for an Optuna search's study) is
:mod:`nanogpt.cli.report`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from nanogpt.files import write_atomically
from nanogpt.runs.folder import RESULT_FILE
from nanogpt.runs.jobs import UNRUN, Job, is_job_folder, load_job, natural_key, val_against_time
from nanogpt.runs.plan import Plan, unrun_grid_jobs
from nanogpt.runs.render import TIME_PLOT, job_label, render, seeds_repeat
from nanogpt.runs.stats import config_keys, parse_baseline, seed_statistics, varying_keys


def find_jobs(
    sweep_dir: str | os.PathLike, plan: Plan | None = None, also: Sequence[str | os.PathLike] = ()
) -> list[Job]:
    """Every job of ``sweep_dir``: its job folders, then the planned grid jobs that have none.

    ``also``: other sweep folders of the same study (e.g. seeds another command or machine ran), whose
    jobs that ran join the table named ``<folder>/<job>``, and count for ``sweep_dir``'s plan.

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
    for other in also:  # their own unrun jobs are theirs; ours are what none of them ran
        ran = [j for j in find_jobs(other) if j.status not in UNRUN]
        jobs += [replace(j, name=f"{Path(other).name}/{j.name}") for j in ran]
    if plan is not None and plan.jobs is not None:
        jobs += unrun_grid_jobs(jobs, plan)
    return jobs


def write_report(
    sweep_dir: str | os.PathLike,
    baseline: str | None = None,
    also: Sequence[str | os.PathLike] = (),
    plots: bool = True,
) -> Path:
    """Write ``report.md``, ``report.csv``, ``val_loss.png`` (and ``seeds.csv``, ``val_loss_vs_time.png``)
    into ``sweep_dir``.

    ``baseline`` (``KEY=VALUE``) is the configuration the seed statistics compare each one with; a
    ``ValueError`` lists the valid choices when the sweep has no such configuration. ``None``: the
    default (:func:`~nanogpt.runs.stats.default_baseline`). ``also``: see :func:`find_jobs`.
    ``plots=False`` writes the text only and leaves the PNGs as they are (drawing them takes most of
    the report's time, which a sweep of short jobs would pay after every job).
    """
    sweep_dir = Path(sweep_dir)
    plan = Plan.load(sweep_dir)
    jobs = find_jobs(sweep_dir, plan, also)
    chosen = parse_baseline(baseline, jobs) if baseline is not None else None
    md, jobs_csv, seeds_csv = render(sweep_dir, jobs, plan, chosen)
    if plots:
        _draw_plots(sweep_dir, jobs)
    write_atomically(sweep_dir / "report.csv", jobs_csv)
    if seeds_csv is not None:
        write_atomically(sweep_dir / "seeds.csv", seeds_csv)
    return write_atomically(sweep_dir / "report.md", md)


def _draw_plots(sweep_dir: Path, jobs: Sequence[Job]) -> None:
    """``val_loss.png``, and ``val_loss_vs_time.png`` when seeds repeat."""
    from nanogpt.runs.plots import plot_against_time, plot_sweep  # matplotlib only when a plot is drawn

    varying, _ = varying_keys(jobs)
    curves = {job_label(j, varying): j.val_curve for j in jobs if j.status not in UNRUN}
    plot_sweep(curves, sweep_dir / "val_loss.png", title=str(sweep_dir))
    stats = seed_statistics(jobs)
    if seeds_repeat(stats):
        keys = config_keys(varying)
        # a configuration's seeds, in the table's order (best first), as seed_statistics grouped them
        runs: dict[str, list] = {
            " ".join(f"{k}={v}" for k, v in s.params.items()) or "all": [] for s in stats
        }
        for job in jobs:
            if job.scored and job.path is not None:
                label = " ".join(f"{k}={job.params[k]}" for k in keys if k in job.params) or "all"
                runs[label].append(val_against_time(job.path))
        plot_against_time(runs, sweep_dir / TIME_PLOT, title=str(sweep_dir))
