"""How nanogpt drives Lightning's training loop, counted in optimizer steps.

- :func:`is_logging_step`: whether an optimizer step is one whose metrics reach the loggers; every
  callback that measures something only for the loggers asks it.
- :class:`ValidateLastStep`: every run that reaches ``max_steps`` ends with a validation there,
  so a completed run always has a ``val/loss`` and a ``best.ckpt``, whatever its length.
- :class:`StopOnNonFiniteLoss`: a NaN or infinite loss stops the run, naming that step, before a
  validation or a checkpoint could keep the broken model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


def is_logging_step(trainer: L.Trainer, steps_done: int) -> bool:
    """Whether Lightning hands the metrics of the optimizer step that brings the run to ``steps_done``
    steps to the loggers: every ``trainer.log_every_n_steps`` steps, and the run's last step
    (``trainer.max_steps``, where :class:`ValidateLastStep` stops it), and always under ``fast_dev_run``.

    ``steps_done`` counts the step being made: ``trainer.global_step + 1`` in ``training_step`` and
    before the optimizer steps, ``trainer.global_step`` once it has (``on_train_batch_end``).
    """
    if trainer.fast_dev_run or 0 < trainer.max_steps <= steps_done:
        return True
    every = trainer.log_every_n_steps
    return every > 0 and steps_done % every == 0


class ValidateLastStep(Callback):
    """Validate at the last step of a run unless a validation is due there anyway.

    Asking the trainer to stop (Lightning's public ``should_stop``, as early stopping does) makes
    Lightning validate at that step before it stops; ``ModelCheckpoint`` then updates ``best.ckpt``.
    """

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True


class StopOnNonFiniteLoss(Callback):
    """Raise ``FloatingPointError`` naming the first step whose training loss was NaN or infinite,
    and the step the run stopped at when that is a later one.

    Every step marks a non-finite loss on the device (a few tiny kernels, no wait); the mark is read
    off the device only on the loggers' steps, which read the loss anyway, before every validation
    and checkpoint, and when training ends. A GPU's queue of steps never drains for it, and a broken
    model is stopped before a validation or a checkpoint could keep it, within
    ``trainer.log_every_n_steps`` steps of breaking.

    Args:
        dirpath: the run's checkpoint folder, to name the last good checkpoint in the error.
    """

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self._first_bad_step: torch.Tensor | None = None  # -1 while every loss was finite
        self._first_bad_loss: torch.Tensor | None = None
        self._read_at_step = -1

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        loss = loss.detach()
        if self._first_bad_step is None:
            self._first_bad_step = torch.full((), -1, dtype=torch.long, device=loss.device)
            self._first_bad_loss = torch.zeros((), dtype=loss.dtype, device=loss.device)
        first = (self._first_bad_step < 0) & ~torch.isfinite(loss)
        step = torch.full((), trainer.global_step, dtype=torch.long, device=loss.device)
        self._first_bad_step = torch.where(first, step, self._first_bad_step)
        self._first_bad_loss = torch.where(first, loss, self._first_bad_loss)
        step_done = trainer.global_step
        if is_logging_step(trainer, step_done) and step_done != self._read_at_step:
            self._read_at_step = step_done  # once per optimizer step, not per accumulated micro-batch
            self._check(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._check(trainer)  # raised before the file is written: no checkpoint of a broken model

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

    def _check(self, trainer: L.Trainer) -> None:
        if self._first_bad_step is None or (step := int(self._first_bad_step.item())) < 0:
            return
        saved = sorted(self.dirpath.glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
        last_good = f"the last good checkpoint is {saved[-1]}" if saved else "no checkpoint was saved yet"
        # the run's record (result.json) counts the steps it made, which may go past the broken one
        stopped = trainer.global_step
        stops = (
            "the run stops there"
            if stopped == step
            else f"the run, which reads the loss every trainer.log_every_n_steps, stopped at step {stopped}"
        )
        raise FloatingPointError(
            f"train/loss is {self._first_bad_loss.item()} at step {step}; {stops} and saves nothing "
            f"more ({last_good}). Lower optimizer.lr, raise scheduler.warmup_steps or keep "
            "trainer.gradient_clip_val, then resume from that checkpoint or start again"
        )
