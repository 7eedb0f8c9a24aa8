"""The run's loss history, and ``<run>/loss.png`` drawn from it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only

from nanogpt.runs.plots import plot_run
from nanogpt.training.callbacks.loop import is_logging_step

log = logging.getLogger(__name__)


class LossCurves(Callback):
    """Keep the run's loss history and draw it into ``<output_dir>/loss.png`` when training ends.

    ``history`` maps ``train/loss`` (every ``trainer.log_every_n_steps`` steps) and every ``val/*``
    metric (every validation) to ``(step, value)`` points, the step counting optimizer steps done.
    It travels in the checkpoint, so a resumed run draws its whole history. The run record
    (:mod:`nanogpt.training.record`) copies it into ``result.json`` for sweep reports. The plot is also
    drawn when training fails part-way.
    """

    def __init__(self, output_dir: str, filename: str = "loss.png") -> None:
        self.path = Path(output_dir) / filename
        self.history: dict[str, list[tuple[int, float]]] = {}

    def _add(self, key: str, step: int, value: float) -> None:
        points = self.history.setdefault(key, [])
        if not points or points[-1][0] != step:  # accumulation: one point per optimizer step
            points.append((step, value))

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        # the loggers' own cadence, so reading the loss off the device adds no extra sync
        if is_logging_step(trainer, step) and isinstance(outputs, dict) and "loss" in outputs:
            self._add("train/loss", step, outputs["loss"].item())

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        for key, value in trainer.callback_metrics.items():
            if key.startswith("val/"):
                self._add(key, trainer.global_step, float(value))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._plot(trainer)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._plot(trainer)

    @rank_zero_only
    def _plot(self, trainer: L.Trainer) -> None:
        if trainer.fast_dev_run:
            return  # debug=fdr is a smoke test: one step draws no curve
        try:
            run = self.path.parent
            plot_run(
                self.history, self.path, title=f"{run.parent.name}/{run.name} (step {trainer.global_step})"
            )
        except Exception as err:  # a plot is never worth failing (or masking the error of) a run
            log.warning("could not draw %s: %s", self.path, err)

    def state_dict(self) -> dict[str, Any]:
        return {"history": {k: [list(p) for p in v] for k, v in self.history.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {k: [(int(s), float(v)) for s, v in pts] for k, pts in state_dict["history"].items()}
