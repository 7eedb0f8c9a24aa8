"""optimizer=muon: torch.optim.Muon on the blocks' matrices and AdamW on the rest, as one optimizer
(nanogpt.optimizers.MuonWithAdamW). Each parameter is trained once and by the right rule, one scheduler
drives both rates, it learns, its state survives a checkpoint, and 2-process DDP gives the one-process
update. (A Lightning run with optimizer=muon resumes bitwise: test_loop.py.)

This module's top-level imports stay light (torch and the model): the DDP test's second rank is a
spawned process that imports it to find its function.
"""

from __future__ import annotations

import copy
import io
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from nanogpt import options
from nanogpt.model import GPT, GPTConfig, ParamGroups
from nanogpt.optimizers import MuonWithAdamW, muon
from nanogpt.schedule import warmup_cosine

SHAPE = dict(block_size=16, vocab_size=50, n_layer=2, n_head=4, n_embd=32)
LR, MATRIX_LR, DECAY = 3e-3, 0.02, 0.1

# each component that changes which parameters a GPT has, and all of them together
COMPONENTS = {
    "gpt2": {},
    "rope": dict(position="rope"),  # no position table
    "qk_norm": dict(qk_norm=True),  # a norm per head's queries and keys
    "rmsnorm": dict(norm="rmsnorm"),
    "rmsnorm without gain": dict(norm="rmsnorm", norm_gain=False),
    "swiglu": dict(mlp="swiglu"),  # a wider c_fc, gate and value
    "n_kv_head": dict(n_kv_head=2),  # a narrower c_attn
    "untied": dict(tie_weights=False),  # a head of its own
    "no bias": dict(bias=False),
    "all": dict(
        position="rope",
        qk_norm=True,
        norm="rmsnorm",
        mlp="swiglu",
        n_kv_head=1,
        tie_weights=False,
        bias=False,
    ),
}


def tiny_gpt(seed: int = 0, **fields) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(**SHAPE, **fields))


def muon_for(model: GPT, **kwargs) -> MuonWithAdamW:
    return muon(model.param_groups(), **{"lr": LR, "matrix_lr": MATRIX_LR, "weight_decay": DECAY, **kwargs})


def windows(steps: int, rows: int, seed: int = 1) -> list[torch.Tensor]:
    """``steps`` batches of ``rows`` random windows (B, T+1): inputs and targets shifted by one."""
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randint(0, SHAPE["vocab_size"], (rows, SHAPE["block_size"] + 1), generator=g)
        for _ in range(steps)
    ]


def train_steps(model: nn.Module, optimizer, batches, scheduler=None, micro_batches: int = 1) -> None:
    """One optimizer step per batch, over ``micro_batches`` equal slices of it, each loss divided by
    their number (as Lightning accumulates)."""
    for batch in batches:
        optimizer.zero_grad()
        for part in batch.chunk(micro_batches):
            _, loss = model(part[:, :-1], part[:, 1:])
            (loss / micro_batches).backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- which rule trains each parameter ---


def test_the_config_names_the_factory_it_builds():
    # nanogpt.options spells the path out (importing the optimizers there would be an import cycle)
    assert f"{muon.__module__}.{muon.__qualname__}" == options.MUON


@pytest.mark.parametrize("fields", COMPONENTS.values(), ids=list(COMPONENTS))
def test_every_parameter_is_trained_once_and_muon_holds_only_the_blocks_matrices(fields):
    model = tiny_gpt(**fields)
    optimizer = muon_for(model)
    by_muon = [p for g in optimizer.muon.param_groups for p in g["params"]]
    by_adamw = [p for g in optimizer.adamw.param_groups for p in g["params"]]
    counts = Counter(id(p) for p in by_muon + by_adamw)
    assert set(counts) == {id(p) for p in model.parameters()} and set(counts.values()) == {1}
    # what the outer optimizer steps, clips and zeroes: the same parameters, in the same group dicts
    assert [id(p) for g in optimizer.param_groups for p in g["params"]] == [id(p) for p in by_adamw + by_muon]
    # found by walking the modules, not by GPT.param_groups: the weights of the Linear layers inside
    # the blocks (not the head, not the embeddings)
    block_matrices = {id(m.weight) for m in model.transformer.h.modules() if isinstance(m, nn.Linear)}
    assert {id(p) for p in by_muon} == block_matrices and all(p.dim() == 2 for p in by_muon)
    # the gains and biases: decoupled decay would only fight the normalisation
    norms = (nn.LayerNorm, nn.RMSNorm)
    gains_biases = {id(p) for m in model.modules() if isinstance(m, norms) for p in m.parameters()}
    gains_biases |= {id(p) for name, p in model.named_parameters() if name.endswith("bias")}
    for group in optimizer.param_groups:
        for p in group["params"]:
            assert group["weight_decay"] == (0.0 if id(p) in gains_biases else DECAY)
            assert group["lr"] == (MATRIX_LR if id(p) in block_matrices else LR)


def test_flattened_matrices_are_refused_naming_the_fix():
    # the backstop behind check_options' refusal of trainer=fsdp: what FSDP hands the factory
    flat = ParamGroups(embeddings=[], matrices=[nn.Parameter(torch.zeros(12))], head=[], gains_biases=[])
    with pytest.raises(ValueError, match="use trainer=ddp with optimizer=muon, or optimizer=adamw"):
        muon(flat, lr=LR, matrix_lr=MATRIX_LR)


@pytest.mark.parametrize("adjust_lr_fn", [None, "match_rms_adamw"])
def test_weight_decay_shrinks_each_part_by_its_own_rate_and_never_the_gains(adjust_lr_fn):
    # what muon.yaml says of weight_decay: with zero gradients both updates are zero (Muon's
    # orthogonalised zero, AdamW's zero moments), so a step is the decay alone
    model = tiny_gpt(tie_weights=False)  # a head of its own, decayed as the embeddings
    optimizer = muon_for(model, adjust_lr_fn=adjust_lr_fn)
    groups = model.param_groups()
    before = {p: p.detach().clone() for p in model.parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    shrink = {
        "matrices": 1 - MATRIX_LR * DECAY,  # matrix_lr's own, not adjust_lr_fn's scaled rate
        "embeddings": 1 - LR * DECAY,
        "head": 1 - LR * DECAY,
        "gains_biases": 1.0,
    }
    for kind, factor in shrink.items():
        for p in getattr(groups, kind):
            torch.testing.assert_close(p.detach(), before[p] * factor, rtol=1e-6, atol=0)


def test_a_matrix_without_a_gradient_is_neither_moved_nor_decayed():
    # torch.optim.Muon (as AdamW) skips a parameter whose .grad is None: no momentum, no decay
    model = tiny_gpt()
    optimizer = muon_for(model)
    idle = model.transformer.h[1].mlp.c_proj.weight
    before = idle.detach().clone()
    optimizer.zero_grad()
    (batch,) = windows(1, 4)
    _, loss = model(batch[:, :-1], batch[:, 1:])
    loss.backward()
    idle.grad = None  # as if unused this step
    optimizer.step()
    assert torch.equal(idle, before) and idle not in optimizer.state
    assert "momentum_buffer" in optimizer.state[model.transformer.h[0].mlp.c_proj.weight]


def test_muon_lowers_the_loss_of_a_batch_it_trains_on():
    model = tiny_gpt()
    (batch,) = windows(1, 8)
    x, y = batch[:, :-1], batch[:, 1:]
    before = model(x, y)[1].item()
    train_steps(model, muon_for(model), [batch] * 20)
    assert model(x, y)[1].item() < before - 1.0  # 3.9 to 2.3 when written; ln(50) = 3.9 is a uniform guess


# --- one scheduler, one state ---


def test_one_scheduler_drives_both_rates_as_two_optimizers_each_with_its_own():
    steps, warmup = 6, 2
    model, reference = tiny_gpt(), tiny_gpt()
    optimizer = muon_for(model)
    scheduler = warmup_cosine(optimizer, warmup_steps=warmup, decay_steps=steps, min_lr_ratio=0.1)
    # the reference: torch's two optimizers as the factory sets them up, each with its own schedule
    groups = reference.param_groups()
    muon_alone = torch.optim.Muon(groups.matrices, lr=MATRIX_LR, weight_decay=DECAY)
    adamw_alone = torch.optim.AdamW(
        [
            {"params": [*groups.embeddings, *groups.head], "weight_decay": DECAY},
            {"params": groups.gains_biases, "weight_decay": 0.0},
        ],
        lr=LR,
        betas=(0.9, 0.95),
    )
    schedules = [
        warmup_cosine(o, warmup_steps=warmup, decay_steps=steps, min_lr_ratio=0.1)
        for o in (muon_alone, adamw_alone)
    ]
    factors = []
    for batch in windows(steps, 4):
        # both rates scale together: the matrices' and the rest's, by the one factor of this step
        rates = [g["lr"] for g in optimizer.param_groups]
        factors.append(rates[-1] / MATRIX_LR)
        assert rates == pytest.approx([LR * factors[-1]] * 2 + [MATRIX_LR * factors[-1]], rel=1e-12)
        assert rates == [g["lr"] for o in (adamw_alone, muon_alone) for g in o.param_groups]
        train_steps(model, optimizer, [batch], scheduler)
        for o in (muon_alone, adamw_alone):
            o.zero_grad()
        _, loss = reference(batch[:, :-1], batch[:, 1:])
        loss.backward()
        for o, s in zip((muon_alone, adamw_alone), schedules, strict=True):
            o.step()
            s.step()
    assert factors[0] == pytest.approx(1 / 3) and factors[-1] == pytest.approx(0.1)  # warm-up, then the floor
    assert same_tensors(model.state_dict(), reference.state_dict())


def test_a_saved_state_continues_bitwise_as_an_uninterrupted_optimizer():
    def setup(model: GPT):
        optimizer = muon_for(model)
        return optimizer, warmup_cosine(optimizer, warmup_steps=2, decay_steps=6, min_lr_ratio=0.1)

    first, second = windows(3, 4), windows(3, 4, seed=2)
    straight = tiny_gpt()
    optimizer, scheduler = setup(straight)
    train_steps(straight, optimizer, first + second, scheduler)

    interrupted = tiny_gpt()
    optimizer, scheduler = setup(interrupted)
    train_steps(interrupted, optimizer, first, scheduler)
    # through a file, as a checkpoint holds it (tensors and plain data: weights_only loads it)
    buffer = io.BytesIO()
    torch.save(
        {
            "model": interrupted.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
        },
        buffer,
    )
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = tiny_gpt(seed=7)  # other weights, overwritten
    resumed.load_state_dict(saved["model"])
    optimizer, scheduler = setup(resumed)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    # the momentum buffers are back, where the inner Muon reads them
    assert all("momentum_buffer" in optimizer.muon.state[p] for p in resumed.param_groups().matrices)
    train_steps(resumed, optimizer, second, scheduler)
    assert same_tensors(resumed.state_dict(), straight.state_dict())


# --- 2 processes: DDP gives the one-process update ---

DDP_STEPS, RANK_ROWS = 4, 4


def ddp_rank(rank: int, folder: str) -> None:
    """A DDP rank training on its half of each global batch, its weights saved as rank{rank}.pt."""
    torch.set_num_threads(1)  # as the one-process reference: the same kernels give the same sums
    dist.init_process_group(
        "gloo",
        init_method=f"file://{folder}/rendezvous",
        rank=rank,
        world_size=2,
        timeout=timedelta(seconds=120),
    )
    try:
        model = tiny_gpt()
        optimizer = muon_for(model)
        ddp = DistributedDataParallel(model)
        halves = [batch.chunk(2)[rank] for batch in windows(DDP_STEPS, 2 * RANK_ROWS)]
        train_steps(ddp, optimizer, halves)
        torch.save(model.state_dict(), Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_process_ddp_gives_the_one_process_update_bitwise(tmp_path):
    # At the optimizer, not through nanogpt-train: rank r of a DDP run draws its batches from the
    # stream (seed, r, i), which no one-process run reads, so the two layouts never see the same tokens.
    # The one process takes each global batch as the ranks' two halves, accumulated with each loss
    # halved (Lightning's accumulation): DDP averages the ranks' gradients as g0/2 + g1/2, and halving a
    # loss halves its gradient exactly, so the gradients are equal bit for bit, and so is the update.
    # (One doubled batch is not: its float32 sums round differently, and Muon's Newton-Schulz in
    # bfloat16 blows up that noise along the gradient's small singular directions: 1-3% of the
    # update after 5 steps, where a tolerance would hide real bugs.) Rank 1 is one spawned process;
    # rank 0 is this one.
    threads = torch.get_num_threads()
    child = mp.get_context("spawn").Process(target=ddp_rank, args=(1, str(tmp_path)))
    child.start()
    try:
        ddp_rank(0, str(tmp_path))
        child.join(timeout=120)
        assert child.exitcode == 0
    finally:
        torch.set_num_threads(threads)
        if child.is_alive():
            child.kill()
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]

    torch.set_num_threads(1)
    try:
        model = tiny_gpt()
        start = copy.deepcopy(model.state_dict())
        train_steps(model, muon_for(model), windows(DDP_STEPS, 2 * RANK_ROWS), micro_batches=2)
    finally:
        torch.set_num_threads(threads)
    one_process = model.state_dict()
    assert not any(torch.equal(one_process[k], start[k]) for k in start)  # every parameter trained
    assert same_tensors(ranks[0], ranks[1])  # the replicas stay one model
    assert same_tensors(ranks[0], one_process)
