"""A Hydra sweeper that searches with Optuna: ``nanogpt-train -m hparams_search=...``.

Why it exists: Hydra's own Optuna sweeper plugin (hydra-optuna-sweeper 1.3) requires ``optuna<3``
and so ``sqlalchemy<2``, which current environments cannot install, and it never had pruning. This
one is small and uses only Optuna's public ask/tell API: it asks the study for a batch of
``n_jobs`` trials, launches one Hydra job per trial through the configured launcher (basic,
submitit), and tells the study how each ended. The search space is the same YAML as before
(``choice``, ``range``, ``interval``, ``tag(log, ...)``; :func:`nanogpt.sweeps.study.distribution`).

- Pruning: each job reports ``val/loss`` to its trial at every validation and stops when the
  ``pruner`` says so (:class:`nanogpt.training.callbacks.prune.PruneTrial`); it ends with
  ``optuna.TrialPruned``, and the trial is told PRUNED, not FAIL.
- Storage: SQLite in the sweep folder by default; a journal file or an RDB URL
  (:func:`nanogpt.sweeps.study.open_storage`). Re-running the command continues the study.
- Resume after a kill: a trial left unfinished by a stopped sweeper (Ctrl-C, SIGTERM, or ``kill
  -9`` on this machine) is closed as FAIL and its parameters run again first, once, in the next
  command: none is lost, none runs twice to completion.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from nanogpt.files import pid_alive
from nanogpt.sweeps.study import TRIAL_ENV, open_study, pruned_at, search_space

if TYPE_CHECKING:  # Hydra imports every plugin at start-up: Optuna is imported when a search runs
    import optuna

log = logging.getLogger(__name__)

# user attributes of a trial: the sweeper process that runs it, a stopped run's mark, and a re-run's origin
SWEEPER = "sweeper"
INTERRUPTED = "interrupted"
RETRY_OF = "retry_of"


class OptunaSweeper(Sweeper):
    """See the module docstring; the arguments are ``hydra.sweeper``'s keys, as
    configs/hydra/sweeper/optuna.yaml describes them."""

    def __init__(
        self,
        study_name: str,
        storage: str | None = None,
        direction: str | Sequence[str] = "minimize",
        n_trials: int = 20,
        n_jobs: int = 1,
        max_failure_rate: float = 0.0,
        sampler: optuna.samplers.BaseSampler | None = None,
        pruner: optuna.pruners.BasePruner | None = None,
        params: DictConfig | dict[str, Any] | None = None,
    ) -> None:
        self.study_name = study_name
        self.storage = storage
        self.directions = [direction] if isinstance(direction, str) else list(direction)
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.max_failure_rate = max_failure_rate
        self.sampler = sampler
        self.pruner = pruner
        if isinstance(params, DictConfig):
            params = OmegaConf.to_container(params, resolve=False)
        self.params = params or {}

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> None:
        try:
            import optuna
        except ImportError:
            raise ImportError(
                'an Optuna search needs Optuna: pip install -e ".[sweep]" (or pip install optuna)'
            ) from None
        if self.n_jobs < 1 or self.n_trials < 0:
            raise ValueError(
                f"hydra.sweeper.n_jobs={self.n_jobs} and n_trials={self.n_trials}: n_jobs (trials launched "
                "together) must be at least 1 and n_trials at least 0"
            )
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        lines = [f"{key}={value}" for key, value in self.params.items()] + list(arguments)
        searched, fixed = search_space(parser.parse_overrides(lines))
        study = open_study(self.study_name, self.storage, self.directions, self.sampler, self.pruner)
        retried = retry_stopped_trials(study)
        log.info(
            "Optuna study %r (%s): %d trials, %d at a time%s; searching %s",
            self.study_name,
            self.storage or "in memory",
            self.n_trials,
            self.n_jobs,
            f", re-running {retried} stopped before they finished" if retried else "",
            ", ".join(searched) or "nothing",
        )
        job_number, failures = 0, []
        while job_number < self.n_trials:
            trials = [study.ask(searched) for _ in range(min(self.n_jobs, self.n_trials - job_number))]
            for trial in trials:
                trial.set_user_attr(SWEEPER, f"{socket.gethostname()}:{os.getpid()}")
            overrides = [
                (
                    *(f"{key}={value}" for key, value in fixed.items()),
                    *(f"{key}={value}" for key, value in trial.params.items()),
                    # the job's own environment (Hydra restores it after the job): how it finds its trial
                    f"+hydra.job.env_set.{TRIAL_ENV}={trial._trial_id}",  # Optuna has no public trial id
                )
                for trial in trials
            ]
            told = set()
            try:
                returns = self.launcher.launch(overrides, initial_job_idx=job_number)
                for trial, ret in zip(trials, returns, strict=True):
                    error = tell(study, trial, ret, self.directions)
                    told.add(trial.number)
                    if error is not None:
                        failures.append(error)
            finally:
                for trial in trials:  # a stopped sweep (Ctrl-C, SIGTERM): its unfinished trials
                    if trial.number not in told:
                        trial.set_user_attr(INTERRUPTED, True)
                        study.tell(trial, state=optuna.trial.TrialState.FAIL)
            job_number += len(trials)
            if failures and len(failures) / job_number > self.max_failure_rate:
                raise RuntimeError(
                    f"{len(failures)} of {job_number} trials failed, above hydra.sweeper.max_failure_rate="
                    f"{self.max_failure_rate}; the last: {failures[-1]}"
                ) from failures[-1]
        save_best(study, Path(self.config.hydra.sweep.dir))
        if failures and len(failures) == job_number:  # nothing learnt: the command fails, as a grid's does
            raise RuntimeError(f"all {job_number} trials failed; the last: {failures[-1]}") from failures[-1]


def tell(study: optuna.Study, trial: optuna.Trial, ret: JobReturn, directions: list[str]) -> Exception | None:
    """Tell the study how a trial's job ended; return its error if it failed."""
    import optuna

    if ret.status != JobStatus.COMPLETED:
        if pruned_at(study, trial.number) is not None:  # the job ended with TrialPruned
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return None
        try:
            ret.return_value  # noqa: B018 - a failed job's return value raises its error
        except Exception as err:
            log.warning("trial %d failed: %s: %s", trial.number, type(err).__name__, err)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return err
    value = ret.return_value
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(values) != len(directions) or not all(isinstance(v, (int, float)) for v in values):
        error = ValueError(
            f"trial {trial.number} returned {value!r}, not {len(directions)} number(s) to "
            f"{'/'.join(directions)}: set optimized_metric to a metric the run logs (e.g. best_val_loss)"
        )
        log.warning("%s", error)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return error
    study.tell(trial, [float(v) for v in values])
    return None


def retry_stopped_trials(study: optuna.Study) -> int:
    """Close the trials a stopped sweeper left unfinished and queue their parameters to run first.

    A trial still RUNNING whose sweeper process on this machine is gone (``kill -9``) is closed as
    FAIL here; one a sweeper closed when it was interrupted says so in its ``interrupted``
    attribute. Each is queued once (``retry_of`` marks the re-run). A RUNNING trial of a sweeper on
    another machine may still run, so it is left alone.
    """
    import optuna

    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get(RETRY_OF) for t in trials}
    queued = 0
    for trial in trials:
        if trial.state == optuna.trial.TrialState.RUNNING and sweeper_gone(trial.user_attrs.get(SWEEPER)):
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            stopped = True
        else:
            stopped = trial.state == optuna.trial.TrialState.FAIL and trial.user_attrs.get(INTERRUPTED)
        if stopped and trial.number not in retried and RETRY_OF not in trial.user_attrs:
            study.enqueue_trial(trial.params, user_attrs={RETRY_OF: trial.number})
            queued += 1
    return queued


def sweeper_gone(owner: str | None) -> bool:
    """Whether the sweeper process ``host:pid`` ran on this machine and has ended."""
    if not owner or ":" not in owner:
        return False
    host, pid = owner.rsplit(":", 1)
    return host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid))


def save_best(study: optuna.Study, sweep_dir: Path) -> None:
    """``optimization_results.yaml`` in the sweep folder: the best trial's parameters and value."""
    try:
        best = study.best_trials if len(study.directions) > 1 else [study.best_trial]
    except ValueError:  # no trial completed
        return
    results: dict[str, Any] = {"name": "optuna", "study_name": study.study_name}
    if len(best) == 1:
        results |= {"best_params": best[0].params, "best_value": best[0].value}
    else:
        results["solutions"] = [{"params": t.params, "values": t.values} for t in best]
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
