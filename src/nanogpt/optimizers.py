"""Optimizer factories: each takes a GPT's parameter groups and returns a torch optimizer.

The model says what its parameters are (:meth:`GPT.param_groups <nanogpt.model.GPT.param_groups>`);
the factory decides what each kind gets. The Hydra ``optimizer`` group names a factory as a partial
with its hyperparameters (``configs/optimizer/adamw.yaml``), and the LightningModule calls it with
the groups. Another optimizer is another function here and another YAML file beside adamw.yaml.
"""

from __future__ import annotations

from collections.abc import Callable

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
    layout of the optimizer state in our checkpoints). On CUDA and on the CPU it runs PyTorch's fused
    kernel.
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
        # one kernel for all the parameters instead of several per parameter: on the CPU recipe's 0.8M
        # parameters, torch's default there (a loop over them) costs ~8 ms of a ~60 ms step, the fused
        # kernel ~2 ms (docs/benchmarks.md); elsewhere torch's default. (The parameters are on their
        # device by now: Lightning moves the model before asking.)
        fused=True if all(p.device.type in ("cuda", "cpu") for p in params) else None,
    )


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon for the blocks' matrices and AdamW for everything else, as one optimizer.

    Lightning's automatic optimization steps one optimizer, and a scheduler drives one. Rather than
    manual optimization (our own copy of the step, accumulation and clipping logic), this holds
    torch's two optimizers and shares their parameter groups and state: ``param_groups`` lists
    AdamW's groups, then Muon's, as the same dicts, so a scheduler setting every group's ``lr``
    drives both, gradient clipping and ``zero_grad`` see every parameter, and ``state_dict`` holds
    both states in one checkpoint entry, as any torch optimizer's does. AdamW's come first so that
    the first group's rate, which the ``lr`` metric logs, is ``optimizer.lr``'s under any optimizer.
    """

    def __init__(self, muon: torch.optim.Muon, adamw: torch.optim.AdamW) -> None:
        self.muon, self.adamw = muon, adamw
        super().__init__([*adamw.param_groups, *muon.param_groups], defaults={})
        self._share()

    def _share(self) -> None:
        # the inner optimizers read the outer's group dicts and state (their parameters are disjoint)
        n = len(self.adamw.param_groups)
        self.adamw.param_groups, self.muon.param_groups = self.param_groups[:n], self.param_groups[n:]
        self.muon.state = self.adamw.state = self.state

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)  # replaces the group dicts and the state
        self._share()

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.muon.step()
        self.adamw.step()
        return loss


def muon(
    groups: ParamGroups,
    *,
    lr: float,
    matrix_lr: float,
    momentum: float = 0.95,
    nesterov: bool = True,
    ns_steps: int = 5,
    adjust_lr_fn: str | None = None,
    betas: tuple[float, float] = (0.9, 0.95),
    weight_decay: float = 0.0,
    eps: float = 1e-8,
) -> MuonWithAdamW:
    """``torch.optim.Muon`` at ``matrix_lr`` on the blocks' matrices; AdamW at ``lr`` on the rest.

    Muon orthogonalises each matrix's momentum with a Newton-Schulz iteration, so every direction of
    a hidden layer's update moves at the same rate. That only means something for the 2-d weights
    inside the blocks; the embeddings, the head, the gains and the biases get AdamW, as nanochat and
    modded-nanogpt train them. ``weight_decay`` is decoupled in both, on the matrices, embeddings and
    head, never on the gains and biases. The attention's query/key/value matrix is one Linear here,
    so Muon orthogonalises the three together.
    """
    if not groups.matrices:
        raise ValueError("optimizer=muon found no hidden matrices to train; use optimizer=adamw")
    if any(p.dim() != 2 for p in groups.matrices):
        raise ValueError(
            "optimizer=muon needs each hidden matrix whole, but the parameters are flattened shards "
            "(trainer=fsdp); use trainer=ddp with optimizer=muon, or optimizer=adamw with trainer=fsdp"
        )
    inner = torch.optim.Muon(
        groups.matrices,
        lr=matrix_lr,
        weight_decay=weight_decay,
        momentum=momentum,
        nesterov=nesterov,
        ns_steps=ns_steps,
        adjust_lr_fn=adjust_lr_fn,
    )
    decayed = [*groups.embeddings, *groups.head]
    rest = torch.optim.AdamW(
        [
            {"params": decayed, "weight_decay": weight_decay},
            {"params": groups.gains_biases, "weight_decay": 0.0},
        ],
        lr=lr,
        betas=tuple(betas),
        eps=eps,
        fused=True if all(p.is_cuda for p in [*decayed, *groups.gains_biases]) else None,
    )
    return MuonWithAdamW(inner, rest)
