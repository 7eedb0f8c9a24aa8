"""Hydra multirun glue: check a sweep before its first job, and report on it after every job.

``SweepCallback`` is a Hydra callback (``configs/hydra/default.yaml``). Before any job starts it

- composes one job for every value of every swept parameter (command-line sweeps and
  ``hydra.sweeper.params``), so a misspelt key fails at once with Hydra's own error even for
  sweepers that would otherwise fail at their first trial (Optuna);
- refuses trainers that start several processes per job: Lightning's ``ddp`` launcher re-runs the
  whole command in its child processes, which under ``-m`` re-runs the sweep, and under Optuna
  gives the ranks of one job different hyperparameters;
- creates the sweep folder, where Optuna's SQLite study lives.

After every job, and at the end, it rewrites the sweep report (:mod:`nanogpt.runs.report`), so a sweep
whose job failed (Hydra then stops with that job's error) still leaves a report that shows it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra import compose
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.utils import JobReturn
from hydra.errors import ConfigCompositionException, HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf

from nanogpt.runs.report import write_report

log = logging.getLogger(__name__)


def check_single_process(processes: int, strategy: Any = None) -> None:
    """Refuse to run a sweep job that would start ``processes`` > 1 training processes."""
    if processes > 1:
        raise ValueError(
            f"nanogpt-train -m runs every job in this process, but trainer.strategy={strategy} starts "
            f"{processes} processes per job; Lightning would launch them by re-running the whole "
            "sweep, mixing the jobs' hyperparameters. Sweep on one device (trainer=cpu or "
            "trainer=gpu, trainer.devices=1), or run each multi-device configuration as its own "
            "nanogpt-train command (e.g. in a shell loop)"
        )


def processes_per_job(trainer: DictConfig) -> int:
    """How many processes Lightning will start for this trainer config (devices x nodes)."""
    devices = trainer.get("devices", "auto")
    nodes = int(trainer.get("num_nodes", 1) or 1)
    if isinstance(devices, (list, ListConfig)):
        count = len(devices)
    elif isinstance(devices, str) and "," in devices:
        count = len([d for d in devices.split(",") if d.strip()])
    elif str(devices).strip().lstrip("-").isdigit() and int(devices) > 0:
        count = int(devices)
    else:  # -1 or "auto": every device of the accelerator; CPUs count as one
        import torch

        accelerator = str(trainer.get("accelerator", "auto"))
        count = torch.cuda.device_count() if accelerator in ("auto", "gpu", "cuda") else 1
    return max(count, 1) * nodes


def _candidates(override: Override) -> list[str]:
    """The values a sweep override can take, or its ends for a continuous interval."""
    if not override.is_sweep_override():
        return [override.get_value_element_as_str()]
    if override.is_interval_sweep():
        interval = override.value()
        return [str(interval.start), str(interval.end)]
    return list(override.sweep_string_iterator())


def check_sweep(config: DictConfig) -> DictConfig:
    """Compose one job per value of every swept parameter; return the first job's config.

    Raises Hydra's own composition error (unknown key, unknown config option, bad value) naming
    the parameter, before any job starts.
    """
    # the sweeper's params, then the command line, which wins: the order both sweepers use
    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()] + list(config.hydra.overrides.task)
    overrides = OverridesParser.create().parse_overrides(arguments)
    first = {o.get_key_element(): f"{o.get_key_element()}={_candidates(o)[0]}" for o in overrides}
    trials: list[tuple[str | None, dict[str, str]]] = [(None, first)]
    for o in overrides:
        if o.is_sweep_override():
            key = o.get_key_element()
            trials += [(o.input_line, {**first, key: f"{key}={value}"}) for value in _candidates(o)[1:]]
    first_job = None
    for source, trial in trials:
        try:
            # Hydra's public compose API, as a sweeper composes each job: the hydra overrides, then the job's
            job = compose(
                config.hydra.job.config_name,
                [*config.hydra.overrides.hydra, *trial.values()],
                return_hydra_config=False,
            )
        except HydraException as err:
            where = f"the sweep parameter {source!r}" if source else "the sweep"
            raise ConfigCompositionException(f"{where} does not compose: {err}") from None
        if first_job is None:
            first_job = job
    return first_job


class SweepCallback(Callback):
    """Check a multirun before it starts; write its report after every job and at the end."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            job = check_sweep(config)
            if "trainer" in job:
                check_single_process(processes_per_job(job.trainer), job.trainer.get("strategy"))
        except (HydraException, ValueError) as err:
            # Hydra turns a callback's exception into a warning and carries on, which would start
            # the sweep anyway; exiting is the one way to stop it before its first job.
            raise SystemExit(f"Error: {err}\n(checked before the first job; nothing was run)") from None
        # Optuna opens its SQLite file here before any job has made the folder.
        Path(config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:
            self._report(config, final=False)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._report(config, final=True)

    @staticmethod
    def _report(config: DictConfig, final: bool) -> None:
        sweep_dir = Path(OmegaConf.select(config, "hydra.sweep.dir"))
        try:
            path = write_report(sweep_dir)
        except Exception as err:  # a report is never worth failing a job over
            log.warning("could not write the sweep report of %s: %s", sweep_dir, err)
            return
        if final:
            log.info("sweep report: %s (nanogpt-report %s rewrites it)", path, sweep_dir)
