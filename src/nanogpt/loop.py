"""How nanogpt drives Lightning's training loop, counted in optimizer steps.

- ``trainer.val_check_interval`` counts optimizer steps; Lightning counts batches, so
  :func:`lightning_val_check_interval` converts it under gradient accumulation.
- :class:`ValidateLastStep`: every run that reaches ``max_steps`` ends with a validation there,
  so a completed run always has a ``val/loss`` and a ``best.ckpt``, whatever its length.
- :class:`StopOnNonFiniteLoss`: a NaN or infinite loss stops the run at that step, before a
  validation could save the broken model.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig


def lightning_val_check_interval(trainer: DictConfig) -> Any:
    """Lightning's ``val_check_interval`` (in batches) for ours (in optimizer steps)."""
    interval = trainer.get("val_check_interval")
    accumulate = trainer.get("accumulate_grad_batches") or 1
    if isinstance(interval, int) and not isinstance(interval, bool):
        return interval * accumulate
    return interval  # a float is a fraction of an epoch, which an endless stream does not have


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
    """Raise ``FloatingPointError`` at the first step whose training loss is NaN or infinite.

    The check reads the loss off the device at every step: on a GPU that is one small sync per step,
    the price of stopping at the step where the run broke rather than at the next validation.

    Args:
        dirpath: the run's checkpoint folder, to name the last good checkpoint in the error.
    """

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None or math.isfinite(loss.item()):
            return
        saved = sorted(self.dirpath.glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
        last_good = f"the last good checkpoint is {saved[-1]}" if saved else "no checkpoint was saved yet"
        raise FloatingPointError(
            f"train/loss is {loss.item()} at step {trainer.global_step}; the run stops here and saves "
            f"nothing more ({last_good}). Lower optimizer.lr, raise scheduler.warmup_steps or keep "
            "trainer.gradient_clip_val, then resume from that checkpoint or start again"
        )
