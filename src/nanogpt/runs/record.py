"""``<run>/result.json``: the outcome of one run, for sweep reports (:mod:`nanogpt.runs.report`).

:class:`RunRecord` wraps a run: entering it writes the run's ``config.yaml`` and a ``running``
result (with host and pid, so a report can tell a running job from a killed one); leaving it
writes ``completed`` with the best and final metrics, ``interrupted`` (Ctrl-C, SIGTERM) with the
command that resumes it, or ``failed`` with the error. Each carries the step reached, the wall time
and the loss history of the run's :class:`~nanogpt.runs.curves.LossCurves`, and ends with a summary
on the console and in ``train.log``: best val/loss and its step, the checkpoints, and the commands
that sample from and resume the run. A failed run's traceback goes to ``train.log`` only.
``result.json`` is strict JSON: a NaN or infinite metric is written as ``null``, and
``non_finite`` names it. Under DDP only global rank 0 writes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import signal
import socket
import time
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from nanogpt.checkpoint import CHECKPOINT_DIR
from nanogpt.files import write_atomically
from nanogpt.runs import RESULT_FILE
from nanogpt.runs.curves import LossCurves
from nanogpt.runs.names import requeued_into

log = logging.getLogger(__name__)


def finite_or_none(value: Any, path: str, non_finite: dict[str, str]) -> Any:
    """``value`` with every NaN or infinite float replaced by ``None``, noted in ``non_finite``."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:  # tensors, numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        non_finite[path] = str(value)
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v, f"{path}.{k}" if path else str(k), non_finite) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v, f"{path}[{i}]", non_finite) for i, v in enumerate(value)]
    return value


def write_result(run_dir: str | os.PathLike, result: dict[str, Any]) -> Path:
    """Write ``result`` as ``<run_dir>/result.json``, strict JSON (see the module docstring)."""
    non_finite: dict[str, str] = {}
    clean = finite_or_none({k: v for k, v in result.items() if k != "non_finite"}, "", non_finite)
    if non_finite:
        clean["non_finite"] = non_finite
    text = json.dumps(clean, indent=2, allow_nan=False, default=str) + "\n"
    return write_atomically(Path(run_dir) / RESULT_FILE, text)


def task_overrides() -> list[str]:
    """The command-line (or sweep) overrides of this job, as Hydra recorded them."""
    if not HydraConfig.initialized():
        return []
    # unresolved: an override's value may be an interpolation (x=${paths.output_dir}), kept as typed
    return list(OmegaConf.to_container(HydraConfig.get().overrides.task, resolve=False))


def interrupted_by(error: BaseException | None) -> signal.Signals | None:
    """The signal behind an exception that ends a run: SIGINT (Ctrl-C), SIGTERM, or ``None``.

    Lightning turns Ctrl-C into ``SystemExit(1)`` after its shutdown, raised while handling the
    ``KeyboardInterrupt``, and SIGTERM into its ``SIGTERMException``.
    """
    if isinstance(error, SIGTERMException):
        return signal.SIGTERM
    if isinstance(error, KeyboardInterrupt) or (
        isinstance(error, SystemExit) and isinstance(error.__context__, KeyboardInterrupt)
    ):
        return signal.SIGINT
    return None


class RunRecord:
    """Record one training run in its folder; see the module docstring.

    Use as ``with RunRecord(cfg) as record: ...; metrics = record.complete(trainer)``. An exception
    (``KeyboardInterrupt`` too) leaving the block marks the run failed or interrupted and goes on up.
    """

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.run_dir = Path(cfg.paths.output_dir)
        self.trainer: L.Trainer | None = None
        self.spawned_step = 0  # the step reached by ranks that trained in child processes (ddp_spawn)
        self.result: dict[str, Any] = {
            "status": "running",
            "name": cfg.get("name"),
            "overrides": task_overrides(),
            "seed": cfg.get("seed"),
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        if os.environ.get("SLURM_JOB_ID"):  # a requeued job knows its own folder by it
            self.result["slurm_job_id"] = os.environ["SLURM_JOB_ID"]

    def __enter__(self) -> RunRecord:
        self._refuse_another_runs_folder()
        self.started = time.time()
        self.result["started"] = datetime.fromtimestamp(self.started).isoformat(timespec="seconds")
        self._write()
        try:
            self._save_config()
        except BaseException as err:  # a config that does not resolve: __exit__ would not run
            self.__exit__(type(err), err, None)
            raise
        return self

    def watch(self, trainer: L.Trainer) -> None:
        """Take the step reached and the loss history from ``trainer`` when the run ends."""
        self.trainer = trainer

    def complete(self, trainer: L.Trainer) -> dict[str, Any]:
        """Mark the run completed; return its final metrics, step, best val/loss and best checkpoint."""
        self.trainer = trainer
        self._recover_spawned_ranks(trainer)
        metrics: dict[str, Any] = {k: v.item() for k, v in trainer.callback_metrics.items()}
        metrics["step"] = max(trainer.global_step, self.spawned_step)
        checkpoint = trainer.checkpoint_callback
        if isinstance(checkpoint, ModelCheckpoint) and checkpoint.best_model_score is not None:
            metrics["best_val_loss"] = checkpoint.best_model_score.item()
            metrics["best_ckpt"] = checkpoint.best_model_path
        self.result.update(
            status="completed",
            best_val_loss=metrics.get("best_val_loss"),
            best_ckpt=metrics.get("best_ckpt"),
            metrics={k: v for k, v in metrics.items() if isinstance(v, float)},
        )
        return metrics

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        signum = interrupted_by(error)
        if signum is not None:
            how = "Ctrl-C" if signum == signal.SIGINT else signum.name
            self.result.update(status="interrupted", error=f"interrupted by {how}")
        elif error is not None:
            self.result.update(status="failed", error=f"{type(error).__name__}: {error}")
        self.result["wall_time_s"] = time.time() - self.started
        if self.trainer is not None and error is not None:
            try:
                self._recover_spawned_ranks(self.trainer)
            except Exception as err:  # the record of a failure must not fail
                log.warning("could not read the state of the run's ranks from its last.ckpt: %s", err)
        if (self.run_dir / CHECKPOINT_DIR / "last.ckpt").is_file():
            self.result["resume"] = self.resume_command()
        self._write()
        self._summarise(error if signum is None else None)

    def resume_command(self) -> str:
        """The ``nanogpt-train`` command that continues this run from its ``last.ckpt``."""
        overrides = [o for o in self.result["overrides"] if not o.startswith(("ckpt_path=", "+ckpt_path="))]
        return shlex.join(["nanogpt-train", *overrides, f"ckpt_path={self.run_dir}"])

    @rank_zero_only
    def _summarise(self, error: BaseException | None) -> None:
        """Log how the run ended (console and train.log); a failure's traceback goes to train.log only."""
        result = self.result
        step = result.get("step")
        where = "before training" if step is None else f"at step {step}"
        lines = [f"run {result['status']} {where} after {result['wall_time_s']:.0f} s: {self.run_dir}"]
        if result.get("error"):
            lines.append(f"  error           {result['error']}")
        val = [(s, v) for s, v in (result.get("history") or {}).get("val/loss", []) if math.isfinite(v)]
        if val:
            best_step, best = min(val, key=lambda p: p[1])
            lines.append(f"  best val/loss   {best:.4f} at step {best_step}")
        ckpts = self.run_dir / CHECKPOINT_DIR
        for name, what in [("best.ckpt", "lowest val/loss"), ("last.ckpt", "newest state")]:
            if (ckpts / name).is_file():
                lines.append(f"  {what:<15} {ckpts / name}")
        if (ckpts / "best.ckpt").is_file():
            lines.append(f"  sample with     nanogpt-sample ckpt_path={shlex.quote(str(self.run_dir))}")
        if result.get("resume"):
            more = " (raise trainer.max_steps to train longer)" if result["status"] == "completed" else ""
            lines.append(f"  resume with{more}:\n    {result['resume']}")
        log.info("\n".join(lines))
        if error is not None:
            # file-only: nanogpt's DEBUG records go to train.log, not the console (configs/hydra/default.yaml)
            log.debug("the error's traceback", exc_info=(type(error), error, error.__traceback__))

    @rank_zero_only
    def _refuse_another_runs_folder(self) -> None:
        existing = self.run_dir / RESULT_FILE
        if existing.is_file() and not requeued_into(self.run_dir):  # a requeued job resumes its own
            raise FileExistsError(
                f"{self.run_dir} already holds another run's {RESULT_FILE}; a run never writes into "
                "another's folder. Leave hydra.run.dir unset (each run gets a new folder), or choose a "
                "new one; continue that run with ckpt_path=" + str(self.run_dir)
            )

    @rank_zero_only
    def _save_config(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.cfg, self.run_dir / "config.yaml", resolve=True)

    def _recover_spawned_ranks(self, trainer: L.Trainer) -> None:
        """Take back the state of a run whose ranks trained in child processes (``ddp_spawn``).

        This process's trainer then gets only what Lightning hands back (the final metrics and the
        best checkpoint's path), not the step, the loss history or the best score. The run's newest
        ``last.ckpt``, written by rank 0 at its last step, holds them all.
        """
        last = self.run_dir / CHECKPOINT_DIR / "last.ckpt"
        if trainer.global_step > 0 or self.spawned_step or not last.is_file():
            return  # this process trained (or the state is back already)
        checkpoint = torch.load(last, map_location="cpu", weights_only=True)
        if checkpoint.get("global_step", 0) <= trainer.global_step:
            return  # this process trained: its own state is the newest
        self.spawned_step = checkpoint["global_step"]
        for callback in trainer.callbacks:
            state = checkpoint.get("callbacks", {}).get(callback.state_key)
            if state is not None and isinstance(callback, (LossCurves, ModelCheckpoint)):
                callback.load_state_dict(state)

    @rank_zero_only
    def _write(self) -> None:
        if self.trainer is not None:
            self.result["step"] = max(self.trainer.global_step, self.spawned_step)
            curves = next((c for c in self.trainer.callbacks if isinstance(c, LossCurves)), None)
            if curves is not None:
                self.result["history"] = curves.history
        write_result(self.run_dir, self.result)
