"""The learning-rate schedule: linear warm-up, then cosine decay to a floor (as in nanoGPT)."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine_lr(step: int, max_lr: float, warmup_steps: int, decay_steps: int, min_lr: float) -> float:
    """Learning rate at optimizer step ``step`` (0-based)."""
    if step < warmup_steps:
        return max_lr * (step + 1) / (warmup_steps + 1)
    if step >= decay_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, decay_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def warmup_cosine(optimizer: Optimizer, warmup_steps: int, decay_steps: int, min_lr: float) -> LambdaLR:
    """A per-step scheduler following :func:`warmup_cosine_lr` from each group's own learning rate."""
    if warmup_steps < 0 or decay_steps < warmup_steps:
        raise ValueError(
            f"need 0 <= scheduler.warmup_steps <= scheduler.decay_steps, got {warmup_steps} and "
            f"{decay_steps} (decay_steps follows trainer.max_steps unless an experiment sets it); "
            f"lower the warm-up, e.g. scheduler.warmup_steps={max(0, decay_steps // 10)}"
        )

    def factor(max_lr: float):
        return lambda step: warmup_cosine_lr(step, max_lr, warmup_steps, decay_steps, min_lr) / max_lr

    return LambdaLR(optimizer, [factor(group["lr"]) for group in optimizer.param_groups])
