"""``<run>/result.json``: the outcome of one run, for sweep reports (:mod:`nanogpt.runs.report`).

:class:`RunRecord` wraps a run: entering it writes the run's ``config.yaml`` and a ``running``
result (with host and pid, so a report can tell a running job from a killed one); leaving it
writes ``completed`` with the best and final metrics, ``interrupted`` (Ctrl-C, SIGTERM; the
command that resumes it is printed), or ``failed`` with the error. Both carry the
step reached, the wall time and the loss history of the run's :class:`~nanogpt.runs.curves.LossCurves`.
Under DDP only global rank 0 writes.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
import time
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from nanogpt.checkpoint import CHECKPOINT_DIR
from nanogpt.files import write_atomically
from nanogpt.runs import RESULT_FILE
from nanogpt.runs.curves import LossCurves


def write_result(run_dir: str | os.PathLike, result: dict[str, Any]) -> Path:
    """Write ``result`` as ``<run_dir>/result.json``."""
    text = json.dumps(result, indent=2, default=_jsonable) + "\n"
    return write_atomically(Path(run_dir) / RESULT_FILE, text)


def _jsonable(value: Any) -> Any:
    # tensors and numpy scalars from Lightning's metrics
    return value.item() if hasattr(value, "item") else str(value)


def task_overrides() -> list[str]:
    """The command-line (or sweep) overrides of this job, as Hydra recorded them."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


class RunRecord:
    """Record one training run in its folder; see the module docstring.

    Use as ``with RunRecord(cfg) as record: ...; metrics = record.complete(trainer)``. An exception
    (``KeyboardInterrupt`` too) leaving the block marks the run failed and goes on up.
    """

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.run_dir = Path(cfg.paths.output_dir)
        self.trainer: L.Trainer | None = None
        self.result: dict[str, Any] = {
            "status": "running",
            "name": cfg.get("name"),
            "overrides": task_overrides(),
            "seed": cfg.get("seed"),
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }

    def __enter__(self) -> RunRecord:
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
        metrics: dict[str, Any] = {k: v.item() for k, v in trainer.callback_metrics.items()}
        metrics["step"] = trainer.global_step
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
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            # Ctrl-C (Lightning turns it into SystemExit after its shutdown) or SIGTERM
            self.result.update(status="interrupted", error=f"{type(error).__name__}: interrupted")
        elif error is not None:
            self.result.update(status="failed", error=f"{type(error).__name__}: {error}")
        self.result["wall_time_s"] = time.time() - self.started
        self._write()
        if self.result["status"] == "interrupted":
            self._say_how_to_resume()

    @rank_zero_only
    def _say_how_to_resume(self) -> None:
        last = self.run_dir / CHECKPOINT_DIR / "last.ckpt"
        if not last.is_file():
            return
        overrides = [o for o in self.result["overrides"] if not o.startswith(("ckpt_path=", "+ckpt_path="))]
        command = shlex.join(["nanogpt-train", *overrides, f"ckpt_path={self.run_dir}"])
        print(
            f"\nInterrupted at step {self.result.get('step')}; {last} holds it. Resume with:\n  {command}",
            file=sys.stderr,
            flush=True,
        )

    @rank_zero_only
    def _save_config(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.cfg, self.run_dir / "config.yaml", resolve=True)

    @rank_zero_only
    def _write(self) -> None:
        if self.trainer is not None:
            self.result["step"] = self.trainer.global_step
            curves = next((c for c in self.trainer.callbacks if isinstance(c, LossCurves)), None)
            if curves is not None:
                self.result["history"] = curves.history
        write_result(self.run_dir, self.result)
