"""Hydra multirun glue: check a sweep before its first job, and report on it after every job.

``SweepCallback`` is a Hydra callback (``configs/hydra/default.yaml``). Before any job starts it

- composes one job for every value of every swept parameter (command-line sweeps and
  ``hydra.sweeper.params``), so a misspelt key fails at once with Hydra's own error even for
  sweepers that would otherwise fail at their first trial (Optuna). The values of a plain key
  (``seed=1,2,3``) differ in one leaf of the config, so one value of each kind (a scalar, a list,
  a dict) stands for the rest; every option of a config group (``model=a,b``) is composed;
- checks the trainer of a job that starts several processes: Lightning's ``ddp`` launcher re-runs
  the whole command in its child processes, which under ``-m`` would re-run the sweep, and under
  Optuna give the ranks of one job different hyperparameters. Each job trains with ``ddp_spawn``
  instead (:func:`sweep_strategy`, applied by ``train``), and what cannot be made correct (several
  machines without a cluster launcher, FSDP's launcher) is refused before the first job;
- creates the sweep folder, where Optuna's SQLite study lives, and writes the sweep's plan into it
  (``sweep.json``, :class:`~nanogpt.runs.plan.Plan`): a grid's jobs, or Optuna's trial count.

After every job, and when the sweep ends, it rewrites the sweep report (:mod:`nanogpt.runs.report`),
which names the planned jobs that never ran. Its plots, which take most of a report's time, are
redrawn after a job only when the last drawing is :data:`PLOTS_EVERY_S` old, and always when the
sweep ends: a sweep of short jobs pays them once a minute, not once a job.

An interrupted job does not end like a failed one. Hydra catches only ``Exception`` around the task
function (``hydra/core/utils.py::run_job``), and an interrupt leaves ``train`` as a ``SystemExit``
(Lightning's ``SIGTERMException``; Ctrl-C becomes ``SystemExit(1)``) or a ``KeyboardInterrupt``:
Hydra then calls neither ``on_job_end`` nor ``on_multirun_end``, skips the remaining jobs and lets
the exit code through. So the final report is also written at interpreter exit (``atexit``), which
runs for every exception that ends the process. A SIGTERM while no job trains (between jobs, or while
one sets up its data and model) would kill the process at once, leaving no report; from the start of
the sweep it raises Lightning's ``SIGTERMException`` instead. Inside ``fit`` Lightning's own SIGTERM
handling takes over, and stops the job at the end of its step.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import math
import os
import signal
import socket
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from hydra import compose
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import ConfigCompositionException, HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from nanogpt.runs.folder import Result, RunDir, check_free
from nanogpt.runs.jobs import is_job_folder
from nanogpt.runs.plan import PLAN_FILE, Plan
from nanogpt.runs.report import write_report
from nanogpt.sweeps.launch import sweep_strategy

log = logging.getLogger(__name__)

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"  # Hydra's grid sweeper

# the least seconds between two drawings of the report's plots while the sweep runs
PLOTS_EVERY_S = 60.0


def grid_jobs(overrides: list[Override]) -> list[list[str]]:
    """A grid's jobs as Hydra's basic sweeper numbers them, each as the overrides its folder records.

    The product of every override's values, the last varying fastest; a key given twice keeps its
    first place and its last values.
    """
    values: dict[str, list[str]] = {}
    for o in overrides:
        key = o.get_key_element()
        choices = o.sweep_string_iterator() if o.is_sweep_override() else [o.get_value_element_as_str()]
        values[key] = [f"{key}={value}" for value in choices]
    return [list(job) for job in itertools.product(*values.values())]


def plan_sweep(config: DictConfig, overrides: list[Override]) -> Plan | None:
    """What this sweep will run: a grid's jobs in job-number order, or Optuna's number of trials.

    ``overrides`` are the sweep's overrides as its sweeper reads them
    (:func:`nanogpt.sweeps.callback.sweep_overrides`), whose product is a grid's jobs. ``None`` for other
    sweepers, whose plan is not known in advance.
    """
    sweeper = config.hydra.sweeper
    process = {"host": socket.gethostname(), "pid": os.getpid()}
    if sweeper.get("_target_") == BASIC_SWEEPER:
        return Plan(jobs=grid_jobs(overrides), **process)
    if sweeper.get("n_trials") is not None:
        sweep_dir = Path(config.hydra.sweep.dir)
        earlier = (
            sorted(p.name for p in sweep_dir.iterdir() if is_job_folder(p)) if sweep_dir.is_dir() else []
        )
        return Plan(trials=int(sweeper.n_trials), earlier_jobs=earlier, **process)
    return None


def _candidates(override: Override) -> list[str]:
    """The values a sweep override can take, or its ends for a continuous interval."""
    if not override.is_sweep_override():
        return [override.get_value_element_as_str()]
    if override.is_interval_sweep():
        interval = override.value()
        return [str(interval.start), str(interval.end)]
    return list(override.sweep_string_iterator())


def _other_values(override: Override, loader: Any) -> list[str]:
    """The values of a sweep override that :func:`check_sweep` composes besides its first: all of a
    config group's options; of a plain key, the first of each kind not yet composed."""
    first, *others = _candidates(override)
    if loader is None or loader.get_group_options(override.key_or_group):
        return others
    kinds, chosen = {_kind(first)}, []
    for value in others:
        if _kind(value) not in kinds:
            kinds.add(_kind(value))
            chosen.append(value)
    return chosen


def _kind(value: str) -> str:
    """A value's kind as an override writes it: ``[`` a list, ``{`` a dict, ``""`` anything else."""
    return value[:1] if value[:1] in ("[", "{") else ""


def sweep_overrides(config: DictConfig) -> list[Override]:
    """The sweep's overrides as its sweeper reads them: ``hydra.sweeper.params``, then the command line."""
    # the command line comes last so that it wins: the order both sweepers use
    # unresolved: an override's value may be an interpolation (x=${paths.output_dir}), for the job to resolve
    params = config.hydra.sweeper.get("params")
    params = OmegaConf.to_container(params, resolve=False) if params else {}
    task = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
    arguments = [f"{key}={value}" for key, value in params.items()] + list(task)
    # with Hydra's config loader, as the sweepers parse them, glob(...) can list a group's options
    loader = GlobalHydra.instance().config_loader() if GlobalHydra.instance().is_initialized() else None
    return OverridesParser.create(config_loader=loader).parse_overrides(arguments)


def launches_on_cluster(config: DictConfig) -> bool:
    """Whether the sweep's Hydra launcher submits each job to a cluster (submitit's SLURM launcher)."""
    target = str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")
    return "submitit" in target.lower() and "local" not in target.lower()


def check_sweep(config: DictConfig) -> DictConfig:
    """Compose one job per value of every swept parameter; return the first job's config.

    Raises Hydra's own composition error (unknown key, unknown config option, bad value) naming
    the parameter, before any job starts. Composing takes a good part of a second, so a swept key
    that is no config group is composed once per kind of value (see the module docstring).
    """
    overrides = sweep_overrides(config)
    loader = GlobalHydra.instance().config_loader() if GlobalHydra.instance().is_initialized() else None
    first = {o.get_key_element(): f"{o.get_key_element()}={_candidates(o)[0]}" for o in overrides}
    trials: list[tuple[str | None, dict[str, str]]] = [(None, first)]
    for o in overrides:
        if o.is_sweep_override():
            key = o.get_key_element()
            trials += [(o.input_line, {**first, key: f"{key}={value}"}) for value in _other_values(o, loader)]
    first_job = None
    for source, trial in trials:
        try:
            # Hydra's public compose API, as a sweeper composes each job: the hydra overrides, then the job's
            job = compose(
                config.hydra.job.config_name,
                [*OmegaConf.to_container(config.hydra.overrides.hydra, resolve=False), *trial.values()],
                return_hydra_config=False,
            )
        except HydraException as err:
            where = f"the sweep parameter {source!r}" if source else "the sweep"
            raise ConfigCompositionException(f"{where} does not compose: {err}") from None
        if first_job is None:
            first_job = job
    return first_job


def check_grid_folders_free(config: DictConfig) -> None:
    """Refuse a grid whose job folders (``0``, ``1``, ...) already hold an earlier sweep's runs.

    Hydra numbers a grid's jobs from 0 in every command, and writes each job's ``.hydra/`` record
    before the job could refuse the folder: a grid re-run in the same ``hydra.sweep.dir`` would
    rewrite the earlier jobs' records. (Optuna numbers a continued study's trials after the earlier
    ones, so continuing a study in its folder is fine.)
    """
    plan = plan_sweep(config, sweep_overrides(config))
    subdir = OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir")
    if plan is None or plan.jobs is None or subdir != "${hydra.job.num}":
        return
    sweep_dir = Path(config.hydra.sweep.dir)
    taken = []
    for number in range(len(plan.jobs)):
        try:
            check_free(RunDir.at(sweep_dir / str(number)), before_hydra=True)
        except FileExistsError:
            taken.append(str(number))
    if taken:
        raise FileExistsError(
            f"{sweep_dir} already holds the job folders {', '.join(taken)} of an earlier sweep, which this "
            "grid's jobs would write into; leave hydra.sweep.dir unset (each sweep gets a new folder), "
            "or choose a new one"
        )


class SweepCallback(Callback):
    """Check a multirun before it starts; write its report after every job and when it ends.

    See the module docstring for how an interrupted sweep still gets its final report.
    """

    def __init__(self) -> None:
        self._config: DictConfig | None = None  # set while a sweep runs
        self._sweep_dir = Path()
        self._plan: Plan | None = None
        self._previous_sigterm: Any = None
        self._plotted_at = -math.inf  # time.monotonic() of the report's last plots

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            job = check_sweep(config)
            # a job launched on a cluster (submitit) gets its ranks from SLURM, not from this process
            if "trainer" in job and not launches_on_cluster(config):
                sweep_strategy(job.trainer)
            check_grid_folders_free(config)
        except (HydraException, ValueError, FileExistsError) as err:
            # Hydra turns a callback's exception into a warning and carries on, which would start
            # the sweep anyway; exiting is the one way to stop it before its first job.
            raise SystemExit(f"Error: {err}\n(checked before the first job; nothing was run)") from None
        self._config = config
        self._sweep_dir = Path(config.hydra.sweep.dir)
        # Optuna opens its SQLite file here before any job has made the folder.
        self._sweep_dir.mkdir(parents=True, exist_ok=True)
        self._plan = self._write_plan(config)
        atexit.register(self._on_exit)
        try:
            self._previous_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)
        except ValueError:  # not the main thread: SIGTERM keeps its default, and kills at once
            self._previous_sigterm = None

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        if job_return.status == JobStatus.FAILED:
            self._record_early_failure(config, job_return)
        plots = time.monotonic() - self._plotted_at >= PLOTS_EVERY_S
        self._report(config, final=False, plots=plots)
        if plots:
            self._plotted_at = time.monotonic()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._finish()
        self._report(config, final=True)

    def _on_exit(self) -> None:
        """At interpreter exit after an interrupt or error that skipped ``on_multirun_end``."""
        if self._config is None:
            return
        config = self._config
        self._finish()
        path = self._report(config, final=False)
        if path is not None:
            # print, not log: the interrupted job's logging setup, with its train.log, is still in place
            print(
                f"sweep report: {path} (nanogpt-report {config.hydra.sweep.dir} rewrites it)",
                file=sys.stderr,
                flush=True,
            )

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        # Inside fit, Lightning's handler runs first and calls this one too: SIGTERM is then no
        # longer this handler alone, and Lightning stops the job at the end of its step.
        if signal.getsignal(signal.SIGTERM) != self._on_sigterm:
            return
        print("\nSIGTERM: stopping the sweep", file=sys.stderr, flush=True)
        # a SIGTERMException, so the run's record and nanogpt.cli.train.main see a SIGTERM, with the code the
        # shell expects, so that it exits 143 even when no job is running
        raise SIGTERMException(128 + signal.SIGTERM)

    def _finish(self) -> None:
        """Mark the sweep ended in its plan, so its unrun jobs read as never ran; drop the hooks."""
        self._config = None
        atexit.unregister(self._on_exit)
        if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
            signal.signal(signal.SIGTERM, self._previous_sigterm or signal.SIG_DFL)
        if self._plan is not None:
            self._plan.ended = True
            try:
                self._plan.save(self._sweep_dir)
            except OSError as err:
                log.warning("could not mark the sweep ended in %s: %s", self._sweep_dir / PLAN_FILE, err)

    def _write_plan(self, config: DictConfig) -> Plan | None:
        stale = self._sweep_dir / PLAN_FILE  # an earlier command's plan in a reused folder
        try:
            plan = plan_sweep(config, sweep_overrides(config))
            if plan is None:
                stale.unlink(missing_ok=True)
            else:
                plan.save(self._sweep_dir)
            return plan
        except Exception as err:  # the report then lists the jobs that ran, as without a plan
            log.warning("could not write the plan of the sweep in %s: %s", self._sweep_dir, err)
            return None

    @staticmethod
    def _record_early_failure(config: DictConfig, job_return: JobReturn) -> None:
        # A job that failed before train() opened its RunRecord leaves no result.json; without one,
        # the report would take it for a job that the sweep set up but stopped before it started.
        job_dir = Path(config.hydra.runtime.output_dir)
        try:
            if Result.read(job_dir) is not None:
                return
        except ValueError:
            pass  # a damaged record: this job's failure replaces it
        try:
            error: Any = job_return.return_value  # a failed job's return value raises its exception
        except Exception as err:
            error = err
        try:
            Result(
                status="failed",
                overrides=list(job_return.overrides or []),
                error=f"{type(error).__name__}: {error}",
            ).write(job_dir)
        except OSError as err:
            log.warning("could not record the failure of %s: %s", job_dir, err)

    @staticmethod
    def _report(config: DictConfig, final: bool, plots: bool = True) -> Path | None:
        sweep_dir = Path(OmegaConf.select(config, "hydra.sweep.dir"))
        try:
            path = write_report(sweep_dir, plots=plots)
        except Exception as err:  # a report is never worth failing a job over
            log.warning("could not write the sweep report of %s: %s", sweep_dir, err)
            return None
        if final:
            log.info("sweep report: %s (nanogpt-report %s rewrites it)", path, sweep_dir)
        return path
