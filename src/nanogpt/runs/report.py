"""``nanogpt-report``: one sweep folder as a table, a plot of its val-loss curves and seed statistics.

    nanogpt-report runs/shakespeare_char_cpu/multirun_2026-11-25_10-00-00_5be21d
    nanogpt-report runs/ablation/multirun_<time>_<suffix> --baseline ablation=gpt2

reads every job folder's ``result.json`` (written by :mod:`nanogpt.runs.record`, read by
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
(:mod:`nanogpt.runs.sweep`).

An Optuna search's folder (``hparams_search=...``, ``runs/<name>/optuna_<study_name>``) also holds its
study; ``--dashboard`` serves optuna-dashboard on it, live while the search runs:

    nanogpt-report --dashboard runs/shakespeare_char_cpu/optuna_cpu_optim --port 8080

which is ``optuna-dashboard sqlite:///runs/<name>/optuna_<study_name>/optuna.db`` without the URL to
spell (:func:`study_storage` finds the storage, a journal file or an RDB URL too).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from nanogpt.files import write_atomically
from nanogpt.run_dir import RESULT_FILE
from nanogpt.runs.jobs import UNRUN, Job, is_job_folder, load_job, natural_key, val_against_time
from nanogpt.runs.plan import Plan, unrun_grid_jobs
from nanogpt.runs.render import TIME_PLOT, job_label, render, seeds_repeat
from nanogpt.runs.stats import config_keys, parse_baseline, seed_statistics, varying_keys

# an Optuna search's study, as configs/hydra/sweeper/optuna.yaml stores it in the sweep folder by default
# (storage: sqlite:///${hydra.sweep.dir}/optuna.db), or as Optuna's journal file
STUDY_FILES = {"optuna.db": "sqlite:///", "optuna.log": "journal:///"}


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


def study_storage(sweep_dir: str | os.PathLike) -> str:
    """The storage URL (``hydra.sweeper.storage``'s form) of the Optuna study of the sweep folder
    ``sweep_dir``: its ``optuna.db`` or ``optuna.log``, else the storage its jobs' Hydra config records
    (an RDB URL, a file elsewhere)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    sweep_dir = Path(sweep_dir)
    for name, scheme in STUDY_FILES.items():
        if (sweep_dir / name).is_file():
            return scheme + str((sweep_dir / name).resolve())
    for hydra_dir in sorted(sweep_dir.glob("*/.hydra")):
        try:  # the recorded value interpolates the job's config: ${hydra.sweep.dir} is ${paths.log_dir}/...
            cfg = OmegaConf.merge(
                OmegaConf.load(hydra_dir / "config.yaml"), OmegaConf.load(hydra_dir / "hydra.yaml")
            )
            url = OmegaConf.select(cfg, "hydra.sweeper.storage", default=None)
        except (OSError, OmegaConfBaseException):
            continue
        files = [url[len(scheme) :] for scheme in STUDY_FILES.values() if url and url.startswith(scheme)]
        if url and all(Path(f).is_file() for f in files):  # never create an empty database
            return url
    raise FileNotFoundError(
        f"{sweep_dir} holds no Optuna study (no optuna.db, no optuna.log, no job recording "
        "hydra.sweeper.storage); pass an Optuna search's folder, runs/<name>/optuna_<study_name>"
    )


def serve_dashboard(sweep_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve optuna-dashboard on the study of ``sweep_dir`` (:func:`study_storage`) until Ctrl-C."""
    url = study_storage(sweep_dir)
    try:
        import optuna
        import optuna_dashboard
    except ImportError:
        raise ImportError('--dashboard needs optuna-dashboard: pip install -e ".[sweep]"') from None
    from nanogpt.runs.study import open_storage

    storage = open_storage(url)
    studies = ", ".join(optuna.get_all_study_names(storage)) or "none yet"
    print(f"optuna-dashboard on {url} (studies: {studies}): open http://{host}:{port}/", flush=True)
    try:
        optuna_dashboard.run_server(storage, host=host, port=port)
    except OSError as err:
        if err.errno != errno.EADDRINUSE:
            raise
        raise OSError(
            f"port {port} on {host} is taken; pass --port with another, e.g. --port {port + 1}"
        ) from None


def main(argv: Sequence[str] | None = None, prog: str = "nanogpt-report") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Tabulate and plot the jobs of a nanogpt-train -m sweep folder; "
        "writes report.md, report.csv, val_loss.png (and, when seeds repeat, seeds.csv and "
        "val_loss_vs_time.png) into it. With --dashboard, serve optuna-dashboard on an Optuna search's "
        "study instead.",
    )
    parser.add_argument("sweep_dir", type=Path, help="e.g. runs/shakespeare_char_cpu/multirun_<time>")
    parser.add_argument(
        "--baseline",
        metavar="KEY=VALUE",
        help="when seeds repeat, the configuration every other is compared with (the difference of "
        "its mean best val/loss, with Welch's 95%% t-interval), e.g. ablation=gpt2: one value of an "
        "override the sweep varies; in a grid over several overrides each configuration is compared "
        "with the one that has KEY=VALUE and its own other values. Default: the first value listed "
        "of the first override the sweep varies (seed aside), the first job's; report.md names it",
    )
    parser.add_argument(
        "--add",
        metavar="SWEEP_DIR",
        nargs="+",
        default=[],
        type=Path,
        help="more sweep folders of the same study, e.g. the seeds a second command or machine ran: "
        "their jobs join this report (named <folder>/<job>), which is written into sweep_dir only",
    )
    parser.add_argument(
        "--dashboard",
        action="store_true",
        help="serve optuna-dashboard on the Optuna study of sweep_dir (an hparams_search folder, "
        "runs/<name>/optuna_<study_name>: its optuna.db, optuna.log, or the storage its jobs record) "
        "until Ctrl-C, instead of writing the report; the same as "
        "optuna-dashboard sqlite:///runs/<name>/optuna_<study_name>/optuna.db. Needs the [sweep] extra",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="--dashboard: the address to serve on (default %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=8080, help="--dashboard: the port to serve on (default %(default)s)"
    )
    args = parser.parse_args(argv)
    if args.dashboard:
        try:
            serve_dashboard(args.sweep_dir, args.host, args.port)
        except (FileNotFoundError, ImportError, OSError) as err:
            parser.exit(2, f"{prog}: {err}\n")
        return 0
    try:
        path = write_report(args.sweep_dir, args.baseline, args.add)
    except (FileNotFoundError, ValueError) as err:
        parser.exit(2, f"{prog}: {err}\n")
    sys.stdout.write(path.read_text())
    written = [path, path.with_name("report.csv"), path.with_name("val_loss.png")]
    written += [p for p in (path.with_name("seeds.csv"), path.with_name(TIME_PLOT)) if p.is_file()]
    print(f"\nwritten: {', '.join(map(str, written))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
