"""The learning-rate schedule: linear warm-up, then cosine decay to a floor (as in nanoGPT).

The floor is a ratio of the optimizer's learning rate (nanoGPT's lr/10), so a sweep over
``optimizer.lr`` moves it too, and the decay ends at ``decay_steps``, which follows
``trainer.max_steps`` unless set: the last step of a run trains at the floor.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine_factor(step: int, warmup_steps: int, decay_steps: int, min_lr_ratio: float) -> float:
    """The learning rate of optimizer step ``step`` (0-based), as a fraction of the peak.

    Steps ``0 .. warmup_steps - 1`` rise linearly towards the peak; from ``warmup_steps`` the cosine
    falls so that step ``decay_steps - 1``, the last of a run of ``decay_steps`` steps, is at the floor.
    """
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    last = decay_steps - 1
    if step >= last:
        return min_lr_ratio
    progress = (step - warmup_steps) / max(1, last - warmup_steps)
    return min_lr_ratio + 0.5 * (1.0 + math.cos(math.pi * progress)) * (1.0 - min_lr_ratio)


def warmup_cosine(optimizer: Optimizer, warmup_steps: int, decay_steps: int, min_lr_ratio: float) -> LambdaLR:
    """A per-step scheduler following :func:`warmup_cosine_factor` from each group's own learning rate."""
    if warmup_steps < 0 or decay_steps < warmup_steps:
        raise ValueError(
            f"need 0 <= scheduler.warmup_steps <= scheduler.decay_steps, got {warmup_steps} and "
            f"{decay_steps} (decay_steps follows trainer.max_steps unless an experiment sets it); "
            f"lower the warm-up, e.g. scheduler.warmup_steps={max(0, decay_steps // 10)}"
        )
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(
            f"scheduler.min_lr_ratio must be in [0, 1] (the floor as a fraction of optimizer.lr), "
            f"got {min_lr_ratio}; nanoGPT's recipes use 0.1"
        )
    return LambdaLR(
        optimizer, lambda step: warmup_cosine_factor(step, warmup_steps, decay_steps, min_lr_ratio)
    )
