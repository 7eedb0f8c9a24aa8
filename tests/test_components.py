"""Each modern component of the model (GPTConfig's position, norm, norm_gain, qk_norm, mlp, n_kv_head,
logit_softcap and tie_weights), alone and all together, keeps what every GPT here promises: causal
logits, a KV cache equal to recomputation, checkpoints that round-trip, the parameter count and FLOPs
it states, errors that name the fix, and each parameter in one optimizer group. (Exact resume of every
component with Muon, through Lightning: test_loop.py.)"""

from __future__ import annotations

import copy
import dataclasses
import io
import math
import os
import shutil

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from nanogpt.metrics.flops import flops_per_token
from nanogpt.model import GPT, GPTConfig, apply_rope, rope_tables
from nanogpt.optimizers import adamw, muon

from .helpers.components import CAP, COMPONENTS

# 4 heads of 8 channels, so that 2 and 1 key/value heads are grouped- and multi-query attention
SHAPE = dict(block_size=16, vocab_size=50, n_layer=2, n_head=4, n_embd=32)
COMBINATIONS = ["modern", "modern_swiglu_mqa"]
# every norm module's name: the blocks' two, the final one, and qk_norm's two per attention
NORMS = ("ln_1", "ln_2", "ln_f", "q_norm", "k_norm")


def config_of(name: str, **shape) -> GPTConfig:
    return GPTConfig(**{**SHAPE, **shape, **COMPONENTS[name]})


def roughened(model: GPT) -> GPT:
    """``model`` with weights large enough that every component shapes the logits.

    At GPT-2's init (std 0.02) the logits stay below 1, so a softcap is the identity to 1e-3, a gain
    of ones hides a gain that was never loaded, and greedy decoding repeats the prompt's tokens: a
    wrong position or a stale cache entry could pass unseen.
    """
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3, generator=gen)
            else:  # gains and biases, away from the ones and zeros they start at
                p.uniform_(0.5, 1.5, generator=gen)
    return model


def tokens(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randint(0, SHAPE["vocab_size"], shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", params=list(COMPONENTS))
def name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def model(name: str) -> GPT:
    """The component's tiny model, roughened, in eval mode; tests must not change it."""
    torch.manual_seed(0)
    return roughened(GPT(config_of(name))).eval()


@pytest.fixture(scope="module")
def model64(model: GPT) -> GPT:
    """The same model in float64, so rounding differences between two paths never flip an argmax."""
    return copy.deepcopy(model).double()


# --- an explicit reference ---


def reference_logits(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """The network written out from the components' definitions, reusing only the model's weights:
    norms as formulas, RoPE as complex rotations of channel pairs (i, i + hs/2), each key/value head
    repeated for the n_head / n_kv_head query heads next to each other, an explicit causal mask."""
    c, tr = model.config, model.transformer
    B, T = idx.shape
    C, H, hs = c.n_embd, c.n_head, c.n_embd // c.n_head
    kv = c.n_kv_head or H

    def norm(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if c.norm == "rmsnorm":  # torch's default eps: the dtype's
            x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + torch.finfo(x.dtype).eps)
        else:
            x = (x - x.mean(-1, keepdim=True)) * torch.rsqrt(x.var(-1, correction=0, keepdim=True) + 1e-5)
        if getattr(module, "weight", None) is not None:
            x = x * module.weight
        if getattr(module, "bias", None) is not None:
            x = x + module.bias
        return x

    def rope(x: torch.Tensor) -> torch.Tensor:  # (B, h, T, hs)
        freq = c.rope_base ** (-torch.arange(0, hs, 2, dtype=torch.float64) / hs)  # (hs/2,)
        angle = torch.outer(torch.arange(T, dtype=torch.float64), freq)  # (T, hs/2)
        turn = torch.polar(torch.ones_like(angle), angle)  # e^(i angle)
        z = torch.complex(x[..., : hs // 2], x[..., hs // 2 :]) * turn  # (B, h, T, hs/2)
        return torch.cat((z.real, z.imag), dim=-1)

    x = tr.wte(idx)
    if c.position == "learned":
        x = x + tr.wpe(torch.arange(T))
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for block in tr.h:
        attn = block.attn
        q, k, v = attn.c_attn(norm(block.ln_1, x)).split((C, kv * hs, kv * hs), dim=-1)
        q = q.view(B, T, H, hs).transpose(1, 2)  # (B, H, T, hs)
        k, v = (t.view(B, T, kv, hs).transpose(1, 2) for t in (k, v))  # (B, kv, T, hs)
        if c.qk_norm:
            q, k = norm(attn.q_norm, q), norm(attn.k_norm, k)
        if c.position == "rope":
            q, k = rope(q), rope(k)
        k, v = k.repeat_interleave(H // kv, dim=1), v.repeat_interleave(H // kv, dim=1)  # (B, H, T, hs)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
        y = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1) @ v  # (B, H, T, hs)
        x = x + attn.c_proj(y.transpose(1, 2).reshape(B, T, C))
        h = block.mlp.c_fc(norm(block.ln_2, x))
        if c.mlp == "gelu":
            h = F.gelu(h, approximate=c.gelu_approximate)
        elif c.mlp == "relu2":
            h = h.clamp(min=0) ** 2
        else:  # gate, then value
            gate, value = h[..., : c.mlp_hidden], h[..., c.mlp_hidden :]
            h = gate * torch.sigmoid(gate) * value
        x = x + block.mlp.c_proj(h)
    logits = model.lm_head(norm(tr.ln_f, x))
    if c.logit_softcap is not None:
        logits = c.logit_softcap * torch.tanh(logits / c.logit_softcap)
    return logits


@torch.no_grad()
def test_the_model_matches_an_explicit_reference(model64):
    idx = tokens((2, 16))
    # RoPE's tables are float32 in the model (as torch computes them) and float64 here
    torch.testing.assert_close(model64(idx)[0].double(), reference_logits(model64, idx), rtol=1e-5, atol=1e-5)


def test_rope_scores_depend_only_on_the_distance_between_query_and_key():
    # the point of rotating both: q_m . k_n is a function of m - n, so shifting both keeps every score
    hs, T = 8, 16
    cos, sin = rope_tables(hs, T, base=10000.0)
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, 1, 1, hs, generator=gen).expand(
        1, T, 1, hs
    )  # (B, T, nh, hs): the same query and key everywhere
    k = torch.randn(1, 1, 1, hs, generator=gen).expand(1, T, 1, hs)
    scores = apply_rope(q, cos, sin)[0, :, 0] @ apply_rope(k, cos, sin)[0, :, 0].T  # (T, T): query m, key n
    for shift in (1, 5):
        torch.testing.assert_close(scores[shift:, shift:], scores[:-shift, :-shift], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(scores[0, 1], scores[0, 2])  # and the distance does matter


# --- causality and the KV cache ---


@torch.no_grad()
def test_a_token_changes_no_earlier_logit_and_its_own(model):
    T = model.config.block_size
    idx = tokens((1, T))
    base, _ = model(idx)
    for t in range(T):
        changed = idx.clone()
        changed[0, t] = (changed[0, t] + 1) % model.config.vocab_size
        logits, _ = model(changed)
        assert torch.equal(logits[:, :t], base[:, :t]), f"changing token {t} changed an earlier logit"
        assert not torch.equal(logits[:, t], base[:, t]), f"changing token {t} left its own logits"


@pytest.mark.parametrize("prefill", [1, 7], ids=lambda n: f"prefill{n}")
@torch.no_grad()
def test_the_kv_cache_equals_full_recomputation(model64, prefill):
    # the cached tokens' positions start after the prefill: a RoPE offset lost shows here
    T = model64.config.block_size
    idx = tokens((2, T))
    full, _ = model64(idx)
    caches = model64.new_caches()
    steps = [model64(idx[:, :prefill], caches=caches)[0]]
    steps += [model64(idx[:, t : t + 1], caches=caches)[0] for t in range(prefill, T)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full)


@torch.no_grad()
def test_a_float64_model_with_a_softcap_keeps_float64_logits():
    model = GPT(config_of("softcap")).double()
    logits, _ = model(tokens((1, 4)))
    assert logits.dtype == torch.float64


@pytest.mark.parametrize("prompt_len", [5, 20], ids=lambda n: f"prompt{n}")
def test_cached_generation_past_block_size_equals_recomputation(model64, prompt_len):
    # 40 new tokens on a 16-token context: the stream re-prefills its newest half several times, and
    # RoPE's positions restart at each, in both paths; a 20-token prompt starts beyond the context
    idx = tokens((3, prompt_len), seed=prompt_len)
    greedy = [model64.generate(idx, 40, temperature=0, use_cache=c) for c in (True, False)]
    assert torch.equal(*greedy)
    assert greedy[0].shape == (3, prompt_len + 40) and torch.equal(greedy[0][:, :prompt_len], idx)
    # sampling reads every logit, not only the largest: the paths must agree on all of them
    sampled = [
        torch.cat(list(model64.stream(idx, 40, generator=torch.Generator().manual_seed(7), use_cache=c)), 1)
        for c in (True, False)
    ]
    assert torch.equal(*sampled)


@torch.no_grad()
def test_the_softcap_squashes_the_raw_logits_into_the_cap():
    capped = roughened(GPT(config_of("softcap"))).eval()
    raw = GPT(dataclasses.replace(capped.config, logit_softcap=None)).eval()
    raw.load_state_dict(capped.state_dict())
    idx = tokens((2, 16))
    logits, raw_logits = capped(idx)[0], raw(idx)[0]
    assert raw_logits.abs().max() > CAP  # else the cap would change nothing
    assert logits.abs().max() < CAP
    torch.testing.assert_close(logits, CAP * torch.tanh(raw_logits / CAP))


# --- checkpoints ---


@torch.no_grad()
def test_a_checkpoint_round_trips_without_rope_tables(model):
    # as checkpoints travel: the config as a dict of plain values beside the weights, read back with
    # weights_only=True, and the model rebuilt from that config alone
    buffer = io.BytesIO()
    torch.save({"model": dataclasses.asdict(model.config), "state_dict": model.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    assert not [k for k in saved["state_dict"] if "rope" in k]  # computed, so never stored
    if model.config.position == "rope":
        assert {"rope_cos", "rope_sin"} <= dict(model.named_buffers()).keys()

    loaded = GPT(GPTConfig(**saved["model"])).eval()
    assert loaded.config == model.config
    assert [n for n, _ in loaded.named_parameters()] == [n for n, _ in model.named_parameters()]
    loaded.load_state_dict(saved["state_dict"])  # strict: no key missing, none left over
    idx = tokens((2, 16))
    assert torch.equal(loaded(idx)[0], model(idx)[0])


# --- torch.compile ---


@pytest.mark.nightly  # a cold compile of each model: 1-2 min on 2 cores
# torch's inductor imports torch.utils.mkldnn, whose TorchScript classes warn about TorchScript itself
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("combination", COMBINATIONS)
def test_a_compiled_model_of_every_component_matches_eager_forward_and_backward(combination):
    compiler = os.environ.get("CXX", "g++")  # the one torch's inductor looks for on Linux
    if shutil.which(compiler) is None:
        pytest.skip(f"torch.compile on the CPU builds C++ kernels and there is no {compiler}; install g++")
    torch.manual_seed(0)
    model = GPT(config_of(combination))
    idx, targets = tokens((2, 16)), tokens((2, 16), seed=1)
    try:
        logits, loss = torch.compile(model)(idx, targets)
        loss.backward()
        compiled_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    finally:
        torch._dynamo.reset()  # leave no compiled graphs behind for the next test
    model.zero_grad()
    eager_logits, eager_loss = model(idx, targets)
    eager_loss.backward()
    torch.testing.assert_close(logits, eager_logits, rtol=1e-5, atol=1e-5)
    for n, p in model.named_parameters():
        torch.testing.assert_close(compiled_grads[n], p.grad, rtol=1e-5, atol=1e-5, msg=n)


# --- parameters and FLOPs ---


def closed_form_params(c: GPTConfig) -> int:
    """The parameter count from the config alone, every Linear and norm written out."""
    C, V, hs = c.n_embd, c.vocab_size, c.n_embd // c.n_head
    kv = c.n_kv_head or c.n_head

    def linear(n_in: int, n_out: int) -> int:
        return n_in * n_out + (n_out if c.bias else 0)

    def norm(size: int) -> int:
        if not c.norm_gain:
            return 0
        return 2 * size if c.norm == "layernorm" and c.bias else size  # a gain, and LayerNorm's bias

    if c.mlp == "swiglu":
        hidden = 8 * math.ceil(8 * C / 3 / 8)
        mlp = linear(C, 2 * hidden) + linear(hidden, C)  # gate and value in one Linear
    else:
        mlp = linear(C, 4 * C) + linear(4 * C, C)
    attn = linear(C, C + 2 * kv * hs) + linear(C, C) + (2 * norm(hs) if c.qk_norm else 0)
    block = 2 * norm(C) + attn + mlp
    embeddings = V * C + (c.block_size * C if c.position == "learned" else 0)
    head = 0 if c.tie_weights else V * C
    return embeddings + c.n_layer * block + norm(C) + head


def test_the_parameter_count_matches_the_closed_form(model):
    c = model.config
    total = closed_form_params(c)
    assert model.num_params(non_embedding=False) == total
    assert sum(p.numel() for p in model.parameters()) == total
    # nanoGPT's count leaves out the position table only, and RoPE has none
    assert model.num_params() == total - (c.block_size * c.n_embd if c.position == "learned" else 0)


def test_each_component_changes_the_count_by_what_it_states():
    V, T, L, C = SHAPE["vocab_size"], SHAPE["block_size"], SHAPE["n_layer"], SHAPE["n_embd"]
    count = {name: GPT(config_of(name)).num_params(non_embedding=False) for name in COMPONENTS}
    gpt2 = count["gpt2"]
    assert count["rope"] == gpt2 - T * C  # no position table
    assert "wpe" not in GPT(config_of("rope")).transformer
    assert count["untied"] == gpt2 + V * C  # a head of its own
    assert count["rmsnorm"] == gpt2 - (2 * L + 1) * C  # a gain but no bias in each of 2L+1 norms
    assert count["rmsnorm_no_gain"] == gpt2 - (2 * L + 1) * 2 * C
    for name in ("rmsnorm_no_gain", "modern_swiglu_mqa"):  # the latter with qk_norm's norms too
        names = [n for n, _ in GPT(config_of(name)).named_parameters()]
        assert not [n for n in names if any(f"{norm}." in n for norm in NORMS)]
    assert count["qk_norm"] == gpt2 + L * 2 * 2 * (C // 4)  # q and k LayerNorms over a head's 8 channels
    assert count["relu2"] == gpt2


@pytest.mark.parametrize("n_embd", [128, 768])
def test_swiglu_keeps_the_mlp_at_gelus_8c2_parameters(n_embd):
    hidden = 8 * math.ceil(8 * n_embd / 3 / 8)
    config = GPTConfig(n_layer=1, n_head=n_embd // 64, n_embd=n_embd, mlp="swiglu", bias=False)
    assert config.mlp_hidden == hidden
    with torch.device("meta"):
        mlp = GPT(config).transformer.h[0].mlp
    n = sum(p.numel() for p in mlp.parameters())
    assert n == 3 * n_embd * hidden
    assert abs(n - 8 * n_embd**2) / (8 * n_embd**2) < 0.01


@pytest.mark.parametrize("n_kv_head", [4, 2, 1], ids=["mha", "gqa", "mqa"])
def test_grouped_query_attention_projects_fewer_keys_and_values(n_kv_head):
    C, hs = SHAPE["n_embd"], SHAPE["n_embd"] // SHAPE["n_head"]
    c_attn = GPT(GPTConfig(**SHAPE, n_kv_head=n_kv_head)).transformer.h[0].attn.c_attn
    assert c_attn.weight.shape == (C + 2 * n_kv_head * hs, C)
    assert c_attn.weight.numel() == C * (C + 2 * n_kv_head * hs)


def independent_flops_per_token(model: GPT) -> int:
    """nanoGPT's estimate: 6 FLOPs per weight of every matmul (forward 2, backward 4), and the
    attention's two matmuls over the full context, 12 L H hs T, whatever its key/value heads."""
    c = model.config
    matmul_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    return 6 * matmul_weights + 12 * c.n_layer * c.n_head * (c.n_embd // c.n_head) * c.block_size


# the components at the tiny size, and in two layers of GPT-2 124M's width, heads, context and
# vocabulary, where the head and the attention weigh in as they do in GPT-2 (12 heads: 2 and 1
# key/value heads still group them)
SIZES = {"tiny": {}, "gpt2_width": dict(block_size=1024, vocab_size=50304, n_layer=2, n_head=12, n_embd=768)}


@pytest.mark.parametrize("size", list(SIZES))
def test_measured_flops_agree_with_an_independent_count(name, size):
    config = config_of(name, **SIZES[size])
    with torch.device("meta"):
        model = GPT(config)
    expected = independent_flops_per_token(model)
    assert flops_per_token(config) == pytest.approx(expected, rel=0.01)


# --- config errors ---


BAD_VALUES = [
    # (the bad fields, the option the message must name, the fix it must give)
    (dict(position="alibi"), "model.position", "set model.position=learned"),
    (dict(norm="batchnorm"), "model.norm", "set model.norm=layernorm"),
    (dict(mlp="relu"), "model.mlp", "set model.mlp=gelu"),
    (dict(n_kv_head=3), "model.n_kv_head=3", "Pick one of 1, 2, 4"),
    (dict(n_kv_head=8), "model.n_kv_head=8", "Pick one of 1, 2, 4"),
    (dict(n_kv_head=0), "model.n_kv_head", "set model.n_kv_head="),
    (dict(logit_softcap=0), "model.logit_softcap", "null for none"),
    (dict(logit_softcap=-1.0), "model.logit_softcap", "null for none"),
    (dict(logit_softcap=True), "model.logit_softcap", "null for none"),
    (dict(position="rope", n_embd=12), "model.position=rope", "model.position=learned"),  # 3 per head
    (dict(qk_norm="yes"), "model.qk_norm", "true or false"),
    (dict(norm_gain="no"), "model.norm_gain", "true or false"),
]


@pytest.mark.parametrize(
    "fields,option,fix",
    [pytest.param(*case, id=",".join(f"{k}={v}" for k, v in case[0].items())) for case in BAD_VALUES],
)
def test_a_bad_component_value_names_the_option_and_the_fix(fields, option, fix):
    with pytest.raises(ValueError) as err:
        GPTConfig(**{**SHAPE, **fields})
    assert option in str(err.value) and fix in str(err.value)


# --- the optimizer's groups ---


def kind_by_name(name: str, tied: bool) -> str:
    """What a parameter is, from its name alone."""
    if name in ("transformer.wte.weight", "transformer.wpe.weight"):
        return "embeddings"
    if name == "lm_head.weight":
        assert not tied  # a tied head is listed as the token embedding
        return "head"
    if name.endswith(".bias") or any(f"{norm}." in name for norm in NORMS):
        return "gains_biases"
    return "matrices"


def test_every_parameter_is_in_one_group_and_one_optimizer_group(model):
    groups = model.param_groups()
    names = {id(p): n for n, p in model.named_parameters()}  # tied: listed once, as the embedding
    found = {f.name: [names[id(p)] for p in getattr(groups, f.name)] for f in dataclasses.fields(groups)}
    listed = [n for kind in found.values() for n in kind]
    assert sorted(listed) == sorted(names.values())  # each once, none missing
    for kind, members in found.items():
        assert all(kind_by_name(n, model.config.tie_weights) == kind for n in members), kind
    assert all(p.dim() == 2 for p in groups.matrices)  # what Muon can orthogonalise

    for optimizer in (adamw(groups, lr=1e-3), muon(groups, lr=1e-3, matrix_lr=0.02)):
        held = [id(p) for g in optimizer.param_groups for p in g["params"]]
        assert sorted(held) == sorted(names), type(optimizer).__name__
