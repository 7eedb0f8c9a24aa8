"""Optimizer factories: each takes a GPT's parameter groups and returns a torch optimizer.

The model says what its parameters are (:meth:`GPT.param_groups <nanogpt.model.GPT.param_groups>`);
the factory decides what each kind gets. The Hydra ``optimizer`` group names a factory as a partial
with its hyperparameters (``configs/optimizer/adamw.yaml``), and the LightningModule calls it with
the groups. Another optimizer is another function here and another YAML file beside adamw.yaml.
"""

from __future__ import annotations

import torch

from nanogpt.model import ParamGroups


def adamw(
    groups: ParamGroups,
    *,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.01,
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` (and its defaults) with the weight decay on the matrices and embeddings only.

    The embeddings, the blocks' matrices and an untied head multiply their inputs, and decay keeps
    them small; shrinking a LayerNorm gain or a bias only fights the normalisation, so they get none.
    The optimizer has two groups, decayed then not, each in the model's order (nanoGPT's, and the
    layout of the optimizer state in our checkpoints). On CUDA it runs PyTorch's fused kernel.
    """
    decayed = [*groups.embeddings, *groups.matrices, *groups.head]
    params = [*decayed, *groups.gains_biases]
    return torch.optim.AdamW(
        [
            {"params": decayed, "weight_decay": weight_decay},
            {"params": groups.gains_biases, "weight_decay": 0.0},
        ],
        lr=lr,
        betas=tuple(betas),
        eps=eps,
        # one kernel for all the parameters instead of several per parameter; elsewhere torch's default
        # (the parameters are on their device by now: Lightning moves the model before asking)
        fused=True if all(p.is_cuda for p in params) else None,
    )
