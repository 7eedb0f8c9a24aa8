"""``train/grad_norm``: the norm of all gradients together, before clipping."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import grad_norm
from torch.distributed.fsdp import FullyShardedDataParallel

from nanogpt.training.callbacks.loop import is_logging_step


class GradNorm(Callback):
    """Log ``train/grad_norm`` with Lightning's :func:`~lightning.pytorch.utilities.grad_norm`.

    Measured on the loggers' cadence (every ``trainer.log_every_n_steps`` steps) only, as each
    measurement reads every gradient once. Lightning calls this hook after gradient accumulation and
    before clipping; under DDP the gradients are already averaged, so every rank measures the same norm.
    Under FSDP each rank holds a shard of every gradient, and the ranks' norms are combined.
    """

    def __init__(self, norm_type: float = 2.0) -> None:
        self.norm_type = float(norm_type)

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if not is_logging_step(trainer, trainer.global_step + 1):  # before the step is counted
            return
        if isinstance(trainer.model, FullyShardedDataParallel):
            total = self._sharded_total(trainer, pl_module)
        else:
            total = grad_norm(pl_module, self.norm_type).get(f"grad_{self.norm_type}_norm_total")
        if total is not None:
            pl_module.log("train/grad_norm", total, batch_size=1)

    def _sharded_total(self, trainer: L.Trainer, pl_module: L.LightningModule) -> torch.Tensor:
        # ||g||_p over all shards = (sum over ranks of ||shard||_p ** p) ** (1/p); every rank joins
        # the reduce, also one whose shard of this step's gradients is empty
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None and p.grad.numel()]
        if self.norm_type == float("inf"):
            local = max((g.detach().abs().max().float() for g in grads), default=torch.tensor(0.0))
            return trainer.strategy.reduce(local.to(pl_module.device), reduce_op="max")
        local = sum(
            (g.detach().float().norm(self.norm_type) ** self.norm_type for g in grads), torch.tensor(0.0)
        )
        return trainer.strategy.reduce(local.to(pl_module.device), reduce_op="sum") ** (1 / self.norm_type)
