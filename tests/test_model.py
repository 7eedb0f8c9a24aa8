"""GPT-2's model as nanoGPT has it: the loss, the parameter count, tied weights, the config's checks, the
optimizer groups and the schedule. (The logits against an explicit reference, causality and the KV
cache, for GPT-2 and every modern component: test_components.py.)"""

import math

import pytest
import torch

from nanogpt.model import GPT, GPTConfig
from nanogpt.optimizers import adamw
from nanogpt.schedule import warmup_cosine, warmup_cosine_factor


def tiny(**kw) -> GPT:
    torch.manual_seed(0)
    cfg = dict(block_size=16, vocab_size=11, n_layer=2, n_head=4, n_embd=32, dropout=0.0)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg)).eval()


def test_an_untrained_uniform_model_scores_log_vocab_and_ignores_masked_targets():
    # a model whose output weights are all zero predicts every token with probability 1/V,
    # so its cross-entropy is ln V whatever the input: a reference that needs no formula of ours
    model = tiny()
    torch.nn.init.zeros_(model.lm_head.weight)  # tied: the token embedding too
    idx, tgt = torch.randint(0, 11, (2, 16)), torch.randint(0, 11, (2, 16))
    _, loss = model(idx, tgt)
    assert loss.item() == pytest.approx(math.log(11), rel=1e-6)
    # targets of -1 are padding: they are left out of the mean rather than counted as tokens
    model = tiny()
    masked = tgt.clone()
    masked[:, 8:] = -1
    _, loss_masked = model(idx, masked)
    _, loss_first = model(idx[:, :8], tgt[:, :8])  # causal: the first 8 positions never see the rest
    assert loss_masked.item() == pytest.approx(loss_first.item(), rel=1e-5)


@pytest.mark.parametrize("bias,tied", [(True, True), (False, True), (True, False), (False, False)])
def test_parameter_count_matches_closed_form(bias, tied):
    V, T, L, C = 11, 16, 2, 32
    model = tiny(bias=bias, tie_weights=tied)
    ln = 2 * C if bias else C
    per_block = (
        ln  # ln_1
        + 3 * C * C
        + (3 * C if bias else 0)  # c_attn
        + C * C
        + (C if bias else 0)  # attn.c_proj
        + ln  # ln_2
        + 4 * C * C
        + (4 * C if bias else 0)  # c_fc
        + 4 * C * C
        + (C if bias else 0)  # mlp.c_proj
    )
    total = V * C + T * C + L * per_block + ln + (0 if tied else V * C)
    assert model.num_params(non_embedding=False) == total
    assert model.num_params() == total - T * C


def test_baby_gpt_has_nanogpts_parameter_count():
    model = GPT(GPTConfig(block_size=256, vocab_size=65, n_layer=6, n_head=6, n_embd=384, bias=False))
    assert round(model.num_params() / 1e6, 2) == 10.65  # nanoGPT prints "number of parameters: 10.65M"


def test_weights_are_tied_and_residual_projections_scaled():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=8, vocab_size=50, n_layer=8, n_head=4, n_embd=256))
    assert model.lm_head.weight is model.transformer.wte.weight
    proj = model.transformer.h[0].mlp.c_proj.weight
    fc = model.transformer.h[0].mlp.c_fc.weight
    assert proj.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert fc.std().item() == pytest.approx(0.02, rel=0.05)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"n_embd": 30, "n_head": 4}, r"n_embd=30 is not divisible by model.n_head=4.*multiple of n_head"),
        ({"n_layer": 0}, r"model.n_layer must be a positive integer"),
        ({"block_size": -1}, r"model.block_size must be a positive integer"),
        ({"dropout": 1.0}, r"model.dropout must be in \[0, 1\)"),
    ],
)
def test_config_rejects_bad_values_with_the_fix(kw, match):
    cfg = dict(block_size=16, vocab_size=11, n_layer=2, n_head=4, n_embd=32)
    cfg.update(kw)
    with pytest.raises(ValueError, match=match):
        GPTConfig(**cfg)


def test_longer_input_than_context_is_refused():
    with pytest.raises(ValueError, match="longer than model.block_size=16"):
        tiny()(torch.zeros(1, 17, dtype=torch.long))


def ids(params) -> list[int]:
    return [id(p) for p in params]


@pytest.mark.parametrize("tie_weights", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_param_groups_say_what_each_parameter_is(bias, tie_weights):
    model = tiny(bias=bias, tie_weights=tie_weights)
    groups = model.param_groups()
    tr = model.transformer
    assert ids(groups.embeddings) == ids([tr.wte.weight, tr.wpe.weight])
    assert ids(groups.head) == ids([] if tie_weights else [model.lm_head.weight])
    # the blocks' hidden matrices: attention in and out, MLP in and out
    assert [p.shape for p in groups.matrices] == [(96, 32), (32, 32), (128, 32), (32, 128)] * 2
    assert all(p.dim() == 1 for p in groups.gains_biases)
    listed = [*groups.embeddings, *groups.matrices, *groups.head, *groups.gains_biases]
    assert sorted(ids(listed)) == sorted(ids(model.parameters()))  # each once


@pytest.mark.parametrize("tie_weights", [True, False])
def test_adamw_decays_what_nanogpt_decays_in_its_order(tie_weights):
    model = tiny(tie_weights=tie_weights)
    opt = adamw(model.param_groups(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1, eps=1e-8)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.9, 0.99)
    # nanoGPT's GPT.configure_optimizers: the parameters of 2 or more dims decay, the rest do not, each
    # group in named_parameters order (the layout of the optimizer state in a checkpoint)
    params = [p for _, p in model.named_parameters()]
    decay, no_decay = opt.param_groups
    assert ids(decay["params"]) == ids(p for p in params if p.dim() >= 2)
    assert ids(no_decay["params"]) == ids(p for p in params if p.dim() < 2)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)
    assert decay["lr"] == no_decay["lr"] == pytest.approx(1e-3)
    assert decay["fused"] is True  # PyTorch's fused kernel, on the CPU as on CUDA


def test_warmup_cosine_schedule():
    lr = lambda s: 1e-3 * warmup_cosine_factor(s, 100, 5000, 0.1)  # noqa: E731
    assert lr(0) == pytest.approx(1e-3 / 101)  # nanoGPT's warm-up: lr * (it + 1) / (warmup + 1)
    assert lr(99) == pytest.approx(1e-3 * 100 / 101)
    assert lr(100) == pytest.approx(1e-3)
    assert lr(2549) == pytest.approx(5.5e-4, rel=1e-3)  # halfway down the cosine (2549.5)
    assert lr(4999) == pytest.approx(1e-4) and lr(9000) == pytest.approx(1e-4)
    assert all(lr(s) > lr(s + 1) for s in range(100, 4999))
    opt = torch.optim.AdamW(tiny().parameters(), lr=1e-3)
    sched = warmup_cosine(opt, 100, 5000, 0.1)
    for _ in range(100):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)
    with pytest.raises(ValueError, match=r"scheduler.warmup_steps must be an integer >= 0"):
        warmup_cosine(opt, -1, 50, 0.1)
    with pytest.raises(ValueError, match=r"min_lr_ratio must be in \[0, 1\]"):
        warmup_cosine(opt, 10, 50, 1.5)
