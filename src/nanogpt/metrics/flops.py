"""FLOPs of a training token, counted by torch on the meta device (no memory, no compute)."""

from __future__ import annotations

import torch
from lightning.fabric.utilities.throughput import measure_flops

from nanogpt.model import GPT, GPTConfig

# counted once per model shape per process: the jobs of a sweep (nanogpt-train -m, one process)
# mostly share one, and counting builds and traces the whole model (about half a second on a CPU)
_FLOPS_PER_TOKEN: dict[str, float] = {}


def flops_per_token(config: GPTConfig) -> float:
    """FLOPs of one training token (forward and backward) at full context, counted by torch.

    Within 0.3% of nanoGPT's estimate ``6 N + 12 L H Q T`` for GPT-2 124M and the baby GPT.
    """
    key = repr(config)  # every field of the dataclass
    if key not in _FLOPS_PER_TOKEN:
        _FLOPS_PER_TOKEN[key] = _count_flops_per_token(config)
    return _FLOPS_PER_TOKEN[key]


def _count_flops_per_token(config: GPTConfig) -> float:
    with torch.device("meta"):
        model = GPT(config)
        x = torch.zeros(1, config.block_size, dtype=torch.long)  # (1, T)
    model.train()
    return measure_flops(model, lambda: model(x, x)[1], loss_fn=torch.Tensor.sum) / config.block_size
