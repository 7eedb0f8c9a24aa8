"""Llama checkpoints of Hugging Face ``transformers``, out (``nanogpt-export``).

With rotary positions, RMSNorm and a SwiGLU MLP (:data:`LLAMA_COMPONENTS`) our
:class:`~nanogpt.model.GPT` is Llama's architecture, and ``transformers``' ``LlamaForCausalLM``
computes its logits. What differs is only where the weights are kept:

- our ``c_attn`` is one matmul for queries, keys and values: it splits into ``q_proj``, ``k_proj``
  and ``v_proj`` (``n_embd``, then ``kv_heads * head_size`` rows each, any number of key/value
  heads). Both rotate the half-split channel pairs (HF's ``rotate_half``), so the query and key rows
  need no permutation, as Meta's interleaved checkpoints do;
- our ``c_fc`` holds SwiGLU's gate, then its value: ``gate_proj`` and ``up_proj``;
- an RMSNorm without a gain (``norm_gain=false``, nanochat's) exports a gain of ones;
- our biases, when ``bias=true``, are HF's ``attention_bias`` and ``mlp_bias`` (every projection
  has one in both).

``torch.nn.RMSNorm`` divides by ``sqrt(mean(x²) + eps)`` with float32's machine epsilon, which the
config writes as ``rms_norm_eps``; Llama's own 1e-6 or 1e-5 would move the logits slightly.

Which GPTConfig field LlamaConfig carries, and as what, is the table of :mod:`nanogpt.hf.fields`.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch
from packaging.version import Version

from nanogpt.hf.fields import LLAMA, hf_values, misfits, required
from nanogpt.hf.gpt2 import import_transformers
from nanogpt.model import GPT

if TYPE_CHECKING:
    from transformers import LlamaConfig, LlamaForCausalLM

# Llama's choice of each component GPTConfig offers (nanogpt.hf.fields); norm_gain, n_kv_head, bias and
# tie_weights may be either. HF's Llama has no place for learned positions, LayerNorm, GELU or ReLU²,
# query/key norms or a logit cap.
LLAMA_COMPONENTS = required(LLAMA)
# mlp_bias came in transformers 4.41; an older one would build a Llama without the MLP's biases
MLP_BIAS_SINCE = "4.41"


def hf_llama_config_from_gpt(model: GPT, vocab_size: int, eos_token_id: int | None) -> LlamaConfig:
    """The Hugging Face Llama config of our ``model``, with its vocabulary cut to ``vocab_size``."""
    c = dataclasses.replace(model.config, vocab_size=vocab_size)  # past it: our padding rows
    return import_transformers().LlamaConfig(
        # hidden_size, num_key_value_heads, rope_theta, ...: every field Llama carries (nanogpt.hf.fields)
        **hf_values(c, LLAMA),
        intermediate_size=c.mlp_hidden,
        hidden_act="silu",
        rms_norm_eps=torch.finfo(torch.float32).eps,  # nn.RMSNorm's eps=None in float32
        # Llama's defaults (1 and 2) are tokens of Meta's vocabulary, not ours
        bos_token_id=eos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=None,
    )


def llama_state_dict(model: GPT, vocab_size: int) -> dict[str, torch.Tensor]:
    """Our ``model``'s weights in ``LlamaForCausalLM``'s keys and layouts (views where they can be).

    The embedding and head keep the first ``vocab_size`` rows, the tokenizer's: the rest are our
    padding for faster matmuls, which no token has.
    """
    c = model.config
    ours = model.state_dict()
    q_size, kv_size, hidden = c.n_embd, c.kv_heads * (c.n_embd // c.n_head), c.mlp_hidden
    ones = torch.ones(c.n_embd)  # a gain-less RMSNorm's gain

    def gain(name: str) -> torch.Tensor:
        return ours[name] if c.norm_gain else ones

    hf = {"model.embed_tokens.weight": ours["transformer.wte.weight"][:vocab_size]}
    for i in range(c.n_layer):
        block, layer = f"transformer.h.{i}.", f"model.layers.{i}."
        hf[layer + "input_layernorm.weight"] = gain(block + "ln_1.weight")
        hf[layer + "post_attention_layernorm.weight"] = gain(block + "ln_2.weight")
        for kind in ("weight", "bias") if c.bias else ("weight",):
            q, k, v = ours[f"{block}attn.c_attn.{kind}"].split((q_size, kv_size, kv_size))
            gate, up = ours[f"{block}mlp.c_fc.{kind}"].split((hidden, hidden))
            hf[f"{layer}self_attn.q_proj.{kind}"] = q
            hf[f"{layer}self_attn.k_proj.{kind}"] = k
            hf[f"{layer}self_attn.v_proj.{kind}"] = v
            hf[f"{layer}self_attn.o_proj.{kind}"] = ours[f"{block}attn.c_proj.{kind}"]
            hf[f"{layer}mlp.gate_proj.{kind}"] = gate
            hf[f"{layer}mlp.up_proj.{kind}"] = up
            hf[f"{layer}mlp.down_proj.{kind}"] = ours[f"{block}mlp.c_proj.{kind}"]
    hf["model.norm.weight"] = gain("transformer.ln_f.weight")
    hf["lm_head.weight"] = ours["lm_head.weight"][:vocab_size]  # wte's own, when tied
    return hf


def hf_llama_from_gpt(model: GPT, vocab_size: int, eos_token_id: int | None = None) -> LlamaForCausalLM:
    """Our ``model`` as a ``LlamaForCausalLM`` whose logits over the first ``vocab_size`` tokens are ours."""
    c = model.config
    assert not misfits(LLAMA, dataclasses.asdict(c)), "the caller checks the components first"
    if vocab_size > c.vocab_size:
        raise ValueError(f"a {vocab_size}-token vocabulary does not fit a {c.vocab_size}-row model")
    transformers = import_transformers()
    if c.bias and Version(transformers.__version__) < Version(MLP_BIAS_SINCE):
        raise ValueError(
            f"model.bias=true: transformers {transformers.__version__}'s Llama has no MLP biases to "
            f"hold ours; pip install 'transformers>={MLP_BIAS_SINCE}'"
        )
    hf = transformers.LlamaForCausalLM(hf_llama_config_from_gpt(model, vocab_size, eos_token_id))
    weights = llama_state_dict(model, vocab_size)
    with torch.no_grad():
        for name, tensor in hf.state_dict().items():  # views of hf's parameters: copy_ writes into them
            tensor.copy_(weights.pop(name))
    # a tied head is the embedding, which HF's state dict may list only once
    assert set(weights) <= ({"lm_head.weight"} if c.tie_weights else set()), f"left over: {sorted(weights)}"
    return hf.eval()
