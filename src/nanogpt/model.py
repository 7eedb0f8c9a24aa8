"""A GPT language model in plain PyTorch: GPT-2 by default, with today's components as options.

The default architecture follows nanoGPT: learned position embeddings, pre-LayerNorm blocks, a GELU
MLP at 4x width, optional biases, dropout, and input/output embeddings tied by default. Each modern
choice (as nanochat and modded-nanogpt train) is one ``GPTConfig`` field, read in one place below:

- ``position``: ``rope`` rotates queries and keys by their position (:func:`rope_tables`,
  :func:`apply_rope`) instead of adding a learned position table;
- ``norm`` and ``norm_gain``: RMSNorm instead of LayerNorm, with or without a learned gain
  (:func:`make_norm`); ``qk_norm`` also normalises every head's queries and keys;
- ``mlp``: ReLU² or SwiGLU instead of GELU (:class:`MLP`);
- ``n_kv_head``: fewer key/value heads than query heads, grouped-query attention
  (:class:`CausalSelfAttention`);
- ``logit_softcap``: squash the logits smoothly into (-cap, cap) (:meth:`GPT.forward`);
- ``tie_weights``: share the token embedding with the output head, or not.

This file imports neither Lightning nor Hydra so it can be read, tested and reused on its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from nanogpt.options import positive_int

POSITIONS = ("learned", "rope")
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "relu2", "swiglu")


@dataclass
class GPTConfig:
    block_size: int = 1024  # longest context the model reads (and the learned position table covers)
    vocab_size: int = 50304  # GPT-2's 50257 padded up to a multiple of 64 for faster matmuls
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm, as in GPT-2; False is slightly faster
    tie_weights: bool = True  # share the token embedding with the output head, as in GPT-2
    # "tanh": the tanh approximation GPT-2 was trained with (Hugging Face's gelu_new), so OpenAI's
    # weights give their own logits; "none" is the exact erf GELU of nanoGPT
    gelu_approximate: str = "none"
    # "learned": a table of block_size position vectors added to the tokens (GPT-2); "rope": rotary
    # embeddings, which rotate each head's queries and keys by their position and learn nothing
    position: str = "learned"
    rope_base: float = 10000.0  # RoPE's wavelength base (Llama's): pair i turns by base^(-2i/hs) a token
    norm: str = "layernorm"  # "layernorm" (GPT-2) or "rmsnorm" (no mean, no bias: Llama, nanochat)
    norm_gain: bool = True  # a learned per-channel gain in every norm; nanochat's RMSNorm has none
    qk_norm: bool = False  # normalise each head's queries and keys (nanochat, modded-nanogpt)
    # "gelu" (GPT-2), "relu2" (relu(x)^2, modded-nanogpt) or "swiglu" (Llama); see MLP for the widths
    mlp: str = "gelu"
    # key/value heads: null is n_head (multi-head); fewer share each key/value head among
    # n_head / n_kv_head query heads (grouped-query attention; 1 is multi-query)
    n_kv_head: int | None = None
    # null: raw logits; a cap c gives c * tanh(logits / c), as Gemma 2 and nanochat
    logit_softcap: float | None = None

    def __post_init__(self) -> None:
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            positive_int(getattr(self, name), f"model.{name}")
        if self.n_embd % self.n_head != 0:
            lower = self.n_embd // self.n_head * self.n_head
            raise ValueError(
                f"model.n_embd={self.n_embd} is not divisible by model.n_head={self.n_head}: every head "
                f"needs n_embd/n_head channels. Pick n_embd as a multiple of n_head (e.g. "
                f"model.n_embd={lower or self.n_head}) or an n_head that divides {self.n_embd}."
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.gelu_approximate not in ("none", "tanh"):
            raise ValueError(
                f"model.gelu_approximate must be none (exact GELU) or tanh (GPT-2's approximation), got "
                f"{self.gelu_approximate!r}; set model.gelu_approximate=none or model.gelu_approximate=tanh"
            )
        for name, choices in (("position", POSITIONS), ("norm", NORMS), ("mlp", MLPS)):
            if getattr(self, name) not in choices:
                raise ValueError(
                    f"model.{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}; "
                    f"set model.{name}={choices[0]} (GPT-2's) or another of them"
                )
        for name in ("norm_gain", "qk_norm", "bias", "tie_weights"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"model.{name} must be true or false, got {getattr(self, name)!r}")
        head_size = self.n_embd // self.n_head
        if self.position == "rope":
            if head_size % 2:
                raise ValueError(
                    f"model.position=rope rotates pairs of channels, but each head has {head_size} "
                    f"(model.n_embd={self.n_embd} / model.n_head={self.n_head}), an odd number; pick "
                    "n_embd and n_head whose quotient is even, or model.position=learned"
                )
            base = self.rope_base
            if isinstance(base, bool) or not isinstance(base, (int, float)) or not base > 1:
                raise ValueError(f"model.rope_base must be a number > 1, got {base!r}; Llama's is 10000")
        if self.n_kv_head is not None:
            positive_int(self.n_kv_head, "model.n_kv_head")
            if self.n_head % self.n_kv_head:
                divisors = [d for d in range(1, self.n_head + 1) if self.n_head % d == 0]
                raise ValueError(
                    f"model.n_kv_head={self.n_kv_head} does not divide model.n_head={self.n_head}: each "
                    f"key/value head serves the same number of query heads. Pick one of "
                    f"{', '.join(map(str, divisors))}, or null for one per query head"
                )
        cap = self.logit_softcap
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, (int, float)) or not cap > 0):
            raise ValueError(
                f"model.logit_softcap must be a number > 0 (logits stay within +-cap) or null for none, "
                f"got {cap!r}; nanochat uses 15"
            )

    @property
    def kv_heads(self) -> int:
        """Key/value heads: ``n_kv_head``, or ``n_head`` when that is null."""
        return self.n_kv_head or self.n_head

    @property
    def mlp_hidden(self) -> int:
        """The MLP's hidden width: 4 n_embd, or for SwiGLU 2/3 of that, rounded up to a multiple of 8.

        SwiGLU has three matrices where GELU and ReLU² have two, so two thirds of the width keep
        its parameters (3 x n_embd x 8/3 n_embd) at the others' 8 n_embd², up to the rounding.
        """
        if self.mlp == "swiglu":
            return 8 * math.ceil(8 * self.n_embd / 3 / 8)
        return 4 * self.n_embd


def make_norm(config: GPTConfig, size: int) -> nn.Module:
    """The normalisation ``config.norm`` names, over the last ``size`` channels."""
    if config.norm == "rmsnorm":
        return nn.RMSNorm(size, elementwise_affine=config.norm_gain)
    return nn.LayerNorm(size, elementwise_affine=config.norm_gain, bias=config.bias)


def rope_tables(head_size: int, length: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE's cosines and sines for positions ``0..length-1``, each (length, head_size / 2).

    Channel pair ``i`` (channels ``i`` and ``i + head_size/2``, Llama's half-split layout as in
    Hugging Face) turns by ``position * base^(-2i/head_size)`` radians.
    """
    inv_freq = 1.0 / (base ** (torch.arange(0, head_size, 2, dtype=torch.float32) / head_size))  # (hs/2,)
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)  # (length, hs/2)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each channel pair of ``x`` (B, T, nh, hs) by its position's angle; ``cos, sin``: (T, hs/2)."""
    x1, x2 = x.chunk(2, dim=-1)  # (B, T, nh, hs/2) each
    cos, sin = cos.to(x.dtype)[:, None], sin.to(x.dtype)[:, None]  # (T, 1, hs/2): the same for every head
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class KVCache:
    """Keys and values of the tokens one attention layer has seen, so each new token costs O(T).

    The buffers are allocated at the first append, for ``max_len`` tokens and in the dtype of the
    keys (which autocast may have changed); ``length`` says how much is filled.
    """

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.length = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``k, v`` of shape (B, nh, T, hs) and return every key and value so far."""
        if self.k is None:
            B, nh, _, hs = k.shape
            self.k = k.new_empty(B, nh, self.max_len, hs)  # (B, nh, max_len, hs)
            self.v = v.new_empty(B, nh, self.max_len, hs)
        end = self.length + k.size(2)
        assert end <= self.max_len, "KV cache overflow: the caller must re-prefill a cropped context"
        self.k[:, :, self.length : end] = k
        self.v[:, :, self.length : end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]  # (B, nh, end, hs)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_kv_head = config.kv_heads
        self.head_size = config.n_embd // config.n_head
        self.kv_size = self.n_kv_head * self.head_size  # channels of all key (or value) heads
        # query, key and value for all heads in one matmul
        self.c_attn = nn.Linear(config.n_embd, config.n_embd + 2 * self.kv_size, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.q_norm = make_norm(config, self.head_size) if config.qk_norm else None
        self.k_norm = make_norm(config, self.head_size) if config.qk_norm else None

    def forward(
        self,
        x: torch.Tensor,
        cache: KVCache | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split((self.n_embd, self.kv_size, self.kv_size), dim=2)
        hs = self.head_size
        q = q.view(B, T, self.n_head, hs)  # (B, T, nh, hs)
        k = k.view(B, T, self.n_kv_head, hs)  # (B, T, nkv, hs)
        # the norm and the rotation act on each head's channels: done before the transpose, they
        # leave q, k and v the same kind of strided view, which the CPU attention kernel is fast on
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)  # attention scores from directions, not lengths
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)  # the positions of these T tokens
        q = q.transpose(1, 2)  # (B, nh, T, hs)
        k = k.transpose(1, 2)  # (B, nkv, T, hs)
        v = v.view(B, T, self.n_kv_head, hs).transpose(1, 2)  # (B, nkv, T, hs)
        causal = True
        if cache is not None:
            past = cache.length
            k, v = cache.append(k, v)  # (B, nkv, past + T, hs)
            # Generation either prefills an empty cache (plain causal attention) or feeds one
            # token, whose query may see every cached key, so it needs no mask at all.
            assert past == 0 or T == 1, "a cache is filled by one prefill, then one token at a time"
            causal = past == 0
        # The fused kernel applies the causal mask and attention dropout itself; with fewer key/value
        # heads it shares each among n_head / n_kv_head query heads.
        gqa = {"enable_gqa": True} if self.n_kv_head != self.n_head else {}
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=causal, **gqa
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble the heads side by side
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """GELU or ReLU² at 4x width (two matrices), or SwiGLU at 8/3x (three, kept as two Linears).

    SwiGLU's gate and value share ``c_fc``, one matmul of twice the hidden width, split in two.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        hidden = config.mlp_hidden
        self.kind = config.mlp
        fc_out = 2 * hidden if self.kind == "swiglu" else hidden
        self.c_fc = nn.Linear(config.n_embd, fc_out, bias=config.bias)
        self.gelu = nn.GELU(approximate=config.gelu_approximate) if self.kind == "gelu" else None
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)  # (B, T, hidden), or (B, T, 2 * hidden) for SwiGLU
        if self.kind == "gelu":
            h = self.gelu(h)
        elif self.kind == "relu2":
            h = F.relu(h).square()
        else:
            gate, value = h.chunk(2, dim=-1)
            h = F.silu(gate) * value
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = make_norm(config, config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = make_norm(config, config.n_embd)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        cache: KVCache | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        # pre-norm: the residual stream itself is never normalised
        x = x + self.attn(self.ln_1(x), cache, rope)
        x = x + self.mlp(self.ln_2(x))
        return x


@dataclass
class ParamGroups:
    """A GPT's trainable parameters by what they are, each listed once, in the model's order.

    The model says what its parameters are and the optimizer factory (``nanogpt.optimizers``)
    decides what each kind gets: AdamW decays the embeddings, matrices and head but not the gains
    and biases; Muon takes only ``matrices`` and leaves the rest to AdamW.
    """

    embeddings: list[nn.Parameter]  # token, then position embedding (the token one is the head when tied)
    matrices: list[nn.Parameter]  # the blocks' 2-d weights: attention and MLP projections
    head: list[nn.Parameter]  # the output head, when it is not tied to the token embedding
    gains_biases: list[nn.Parameter]  # the norms' gains and every bias


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        modules = dict(wte=nn.Embedding(config.vocab_size, config.n_embd))
        if config.position == "learned":
            modules["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        self.transformer = nn.ModuleDict(
            dict(
                **modules,
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=make_norm(config, config.n_embd),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            self.transformer.wte.weight = self.lm_head.weight
        if config.position == "rope":
            # computed, not learned: kept out of the state dict, so checkpoints hold weights only
            cos, sin = rope_tables(config.n_embd // config.n_head, config.block_size, config.rope_base)
            self.register_buffer("rope_cos", cos, persistent=False)  # (block_size, hs/2)
            self.register_buffer("rope_sin", sin, persistent=False)

        self.apply(self._init_weights)
        # GPT-2: each residual projection adds to the stream once per layer and twice per block,
        # so shrink it by 1/sqrt(2 * n_layer) to keep the stream's variance flat with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Number of parameters, counting tied weights once.

        With ``non_embedding`` the position embedding (if learned) is left out, as nanoGPT reports
        it; the token embedding stays in because, tied, it is also the output layer.
        """
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and "wpe" in self.transformer:
            n -= self.transformer.wpe.weight.numel()
        return n

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        caches: list[KVCache] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return ``(logits, loss)``; ``loss`` is the mean cross-entropy when ``targets`` is given.

        With ``caches`` (one :class:`KVCache` per layer, from :meth:`new_caches`) ``idx`` continues
        the tokens already cached: positions start after them, and their keys and values are reused.
        """
        B, T = idx.size()
        past = caches[0].length if caches else 0
        if self.config.block_size < past + T:
            raise ValueError(
                f"sequence of length {past + T} is longer than model.block_size={self.config.block_size}; "
                "crop the input or train with a larger model.block_size"
            )
        x = self.transformer.wte(idx)  # (B, T, C)
        rope = None
        if self.config.position == "learned":
            pos = torch.arange(past, past + T, dtype=torch.long, device=idx.device)  # (T,)
            x = x + self.transformer.wpe(pos)
        else:
            rope = self.rope_cos[past : past + T], self.rope_sin[past : past + T]  # (T, hs/2) each
        x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            x = block(x, caches[i] if caches else None, rope)
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)  # (B, T, vocab_size)
        if self.config.logit_softcap is not None:
            cap = self.config.logit_softcap  # smooth, unlike clipping: large logits keep a gradient
            # at least float32: bf16 logits lose the cap's precision, and float64 keeps its own
            logits = cap * torch.tanh(logits.to(torch.promote_types(logits.dtype, torch.float32)) / cap)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def param_groups(self) -> ParamGroups:
        """The trainable parameters by what they are (:class:`ParamGroups`), for an optimizer factory."""
        # By layer, not by p.dim(): FSDP (trainer=fsdp) has already flattened every parameter into a
        # 1-d shard when the optimizer is built, so a shape no longer tells a matrix from a gain.
        groups = ParamGroups(embeddings=[], matrices=[], head=[], gains_biases=[])
        seen = set()  # a tied weight is wte's and lm_head's: listed once, as the embedding it is first
        for module in self.modules():
            for name, p in module.named_parameters(recurse=False):
                if id(p) in seen or not p.requires_grad:
                    continue
                seen.add(id(p))
                if name == "bias" or isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
                    groups.gains_biases.append(p)
                elif isinstance(module, nn.Embedding):
                    groups.embeddings.append(p)
                elif module is self.lm_head:
                    groups.head.append(p)
                else:
                    assert isinstance(module, nn.Linear), f"no group for a {type(module).__name__}'s {name}"
                    groups.matrices.append(p)
        return groups

    def new_caches(self) -> list[KVCache]:
        """Empty key/value caches, one per layer, each holding up to ``block_size`` tokens."""
        return [KVCache(self.config.block_size) for _ in range(self.config.n_layer)]

    @torch.no_grad()
    def stream(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> Iterator[torch.Tensor]:
        """Continue the prompts ``idx`` (B, T), yielding each new column of tokens (B, 1) in turn.

        ``temperature=0`` decodes greedily. The context is at most ``block_size`` tokens: when it
        is full, only its newest half is kept and re-read (one prefill), so the cache then serves
        ``block_size / 2`` more tokens. Keeping the whole sliding window instead would re-read a
        full context at every step past ``block_size`` and lose the cache's speed-up.
        ``use_cache=False`` recomputes the same context from scratch at every step (a reference).
        Call ``model.eval()`` first: dropout would make the samples noisy.
        """
        check_sampling(temperature, top_k, top_p)
        T = idx.size(1)
        if T == 0:
            raise ValueError("the prompt is empty; pass at least one token (e.g. a newline) to start from")
        block_size = self.config.block_size
        start = max(0, T - block_size)  # the context is idx[:, start:]
        caches = None
        for _ in range(max_new_tokens):
            if idx.size(1) - start > block_size:
                start = idx.size(1) - max(1, block_size // 2)  # the newest half, at least one token
                caches = None
            if not use_cache:
                logits, _ = self(idx[:, start:])
            elif caches is None:  # prefill: read the whole context once
                caches = self.new_caches()
                logits, _ = self(idx[:, start:], caches=caches)
            else:  # the rest is cached: only the newest token goes through the network
                logits, _ = self(idx[:, -1:], caches=caches)
            next_ids = sample_next(logits[:, -1, :], temperature, top_k, top_p, generator)  # (B, 1)
            idx = torch.cat((idx, next_ids), dim=1)
            yield next_ids

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        on_token: Callable[[torch.Tensor], None] | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Return the prompts ``idx`` (B, T) followed by ``max_new_tokens`` sampled tokens (B, T + N).

        ``on_token`` is called with each new column of tokens (B, 1) as soon as it is sampled, for
        streaming; the other arguments are those of :meth:`stream`.
        """
        new = []
        for next_ids in self.stream(idx, max_new_tokens, temperature, top_k, top_p, generator, use_cache):
            if on_token is not None:
                on_token(next_ids)
            new.append(next_ids)
        return torch.cat([idx, *new], dim=1)


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Refuse sampling settings that have no meaning, naming the option to change."""
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or temperature < 0:
        raise ValueError(
            f"temperature must be > 0, or 0 for greedy decoding; got temperature={temperature!r}"
        )
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1, or null to keep every token; got top_k={top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not 0.0 < top_p <= 1.0):
        raise ValueError(f"top_p must be in (0, 1], or null to keep every token; got top_p={top_p!r}")


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Set every logit below the ``k`` largest of its row to -inf. ``logits``: (B, V)."""
    k = min(k, logits.size(-1))
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability mass reaches ``p`` (nucleus).

    ``logits``: (B, V). The most likely token is always kept.
    """
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)  # (B, V)
    probs = sorted_logits.softmax(dim=-1)
    # a token is needed while the mass of the tokens before it is still short of p
    drop = probs.cumsum(dim=-1) - probs >= p  # (B, V)
    drop[:, 0] = False
    return logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), float("-inf"))


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick the next token (B, 1) from the last position's ``logits`` (B, V)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return torch.multinomial(logits.softmax(dim=-1), num_samples=1, generator=generator)
