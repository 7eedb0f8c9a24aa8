"""The learning-rate schedule: linear warm-up, then cosine decay to a floor (as in nanoGPT).

The floor is a ratio of the optimizer's learning rate (nanoGPT's lr/10), so a sweep over
``optimizer.lr`` moves it too, and the decay ends at ``decay_steps``, which follows
``trainer.max_steps`` unless set: the last step of a run trains at the floor. A run shorter than
its warm-up (a smoke run of a full recipe) warms up over a tenth of itself instead
(:func:`fitted_warmup`), and says so.
"""

from __future__ import annotations

import logging
import math
from numbers import Real

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

log = logging.getLogger(__name__)


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


def fitted_warmup(warmup_steps: int, decay_steps: int) -> int:
    """The warm-up of a schedule of ``decay_steps`` steps: ``warmup_steps`` when it fits, else a tenth
    of the schedule, with a warning naming the option. ``train`` fits it before the run is recorded
    (:func:`nanogpt.training.spec.derive_spec`), so ``config.yaml`` holds the warm-up the run used.

    A run shorter than its warm-up (``trainer.max_steps=30`` on a recipe that warms up over 100)
    would never reach its learning rate, let alone decay. nanoGPT's recipes warm up over a small
    part of the run (100 of 5000 steps for the baby GPT, 2000 of 600,000 for GPT-2) and our tuned CPU
    recipe over a tenth, the longest of them: so the short run still peaks early and spends most of
    itself decaying, the shape of the full recipe. A warm-up that fits is kept as it is, so every
    full-length recipe (and any run at least as long as its warm-up) keeps its curve exactly.
    """
    if warmup_steps <= decay_steps:
        return warmup_steps
    warmup = decay_steps // 10
    log.warning(
        "scheduler.warmup_steps=%d is longer than this %d-step schedule (scheduler.decay_steps, which "
        "follows trainer.max_steps unless set): it warms up over %d steps, a tenth of it; set "
        "scheduler.warmup_steps=N (at most %d) to choose",
        warmup_steps,
        decay_steps,
        warmup,
        decay_steps,
    )
    return warmup


def check_warmup_cosine(warmup_steps: int, decay_steps: int, min_lr_ratio: float) -> None:
    """Refuse options :func:`warmup_cosine` cannot follow, naming the override that fixes each."""
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(
            f"scheduler.warmup_steps must be an integer >= 0 (optimizer steps of warm-up), got "
            f"{warmup_steps!r}; set scheduler.warmup_steps=..."
        )
    if isinstance(decay_steps, bool) or not isinstance(decay_steps, int) or decay_steps < 1:
        raise ValueError(
            f"scheduler.decay_steps must be a positive integer (the step the cosine ends at), got "
            f"{decay_steps!r}; it follows trainer.max_steps unless set: set scheduler.decay_steps=..."
        )
    if isinstance(min_lr_ratio, bool) or not isinstance(min_lr_ratio, Real) or not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(
            f"scheduler.min_lr_ratio must be in [0, 1] (the floor as a fraction of optimizer.lr), "
            f"got {min_lr_ratio!r}; nanoGPT's recipes use scheduler.min_lr_ratio=0.1"
        )


def warmup_cosine(optimizer: Optimizer, warmup_steps: int, decay_steps: int, min_lr_ratio: float) -> LambdaLR:
    """A per-step scheduler following :func:`warmup_cosine_factor` from each group's own learning rate,
    with the warm-up :func:`fitted_warmup` gives."""
    check_warmup_cosine(warmup_steps, decay_steps, min_lr_ratio)
    warmup = fitted_warmup(warmup_steps, decay_steps)
    return LambdaLR(optimizer, lambda step: warmup_cosine_factor(step, warmup, decay_steps, min_lr_ratio))
