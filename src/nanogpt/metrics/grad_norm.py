"""``train/grad_norm``: the norm of all gradients together, before clipping."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import grad_norm


class GradNorm(Callback):
    """Log ``train/grad_norm`` with Lightning's :func:`~lightning.pytorch.utilities.grad_norm`.

    Measured on the loggers' cadence (every ``trainer.log_every_n_steps`` steps) only, as each
    measurement reads every gradient once. Lightning calls this hook after gradient accumulation and
    before clipping; under DDP the gradients are already averaged, so every rank measures the same norm.
    """

    def __init__(self, norm_type: float = 2.0) -> None:
        self.norm_type = float(norm_type)

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        # Lightning writes step metrics when (steps done + 1) is a multiple of log_every_n_steps
        if (trainer.global_step + 1) % max(trainer.log_every_n_steps, 1):
            return
        norms = grad_norm(pl_module, self.norm_type)
        total = norms.get(f"grad_{self.norm_type}_norm_total")
        if total is not None:
            pl_module.log("train/grad_norm", total, batch_size=1)
