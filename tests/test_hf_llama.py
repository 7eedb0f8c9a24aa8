"""``nanogpt-export`` of a model with rotary positions, RMSNorm and SwiGLU: a Hugging Face Llama folder.

The models are tiny, random and untrained, saved as nanogpt-train saves a checkpoint; the reference
for every logit is ``transformers``' own ``LlamaForCausalLM``, loaded from the exported folder.
"""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import DictConfig

from nanogpt.hf.export import export, hf_format, is_export_file
from nanogpt.model import GPTConfig

from .helpers.hf import SAMPLE, random_gpt, write_checkpoint

transformers = pytest.importorskip("transformers")

LLAMA = dict(position="rope", norm="rmsnorm", mlp="swiglu")


def load_hf(folder):
    return transformers.AutoModelForCausalLM.from_pretrained(folder).eval()


def assert_same_logits(model, hf, idx: torch.Tensor, vocab_size: int) -> None:
    with torch.no_grad():
        ours = model(idx)[0][..., :vocab_size]
        theirs = hf(idx).logits
    assert theirs.shape == ours.shape
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "fields",
    [
        dict(tie_weights=True, n_kv_head=2, bias=False, norm_gain=True),
        # nanochat's gain-less RMSNorm, one key/value head, biases, its own head and another base
        dict(tie_weights=False, n_kv_head=1, bias=True, norm_gain=False, rope_base=500.0),
    ],
    ids=["tied-gqa", "untied-mqa-bias-gainless"],
)
def test_export_of_a_rope_rmsnorm_swiglu_model_gives_llamas_logits(fields, tmp_path):
    model = random_gpt(**LLAMA, **fields)
    c = model.config
    ckpt = write_checkpoint(model, tmp_path / "model.ckpt")
    out = export(DictConfig({"ckpt_path": str(ckpt), "out_dir": str(tmp_path / "hf")}))
    assert all(is_export_file(p) for p in out.iterdir())  # so overwrite=true may replace them
    assert "Hugging Face Llama format" in (out / "README.md").read_text()
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    vocab_size = c.vocab_size - 14  # write_checkpoint's vocabulary: the padding rows are cut
    assert config["vocab_size"] == vocab_size and config["max_position_embeddings"] == c.block_size
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (4, c.kv_heads)
    assert config["intermediate_size"] == c.mlp_hidden == 88
    assert config["rms_norm_eps"] == torch.finfo(torch.float32).eps  # nn.RMSNorm's
    # transformers 5 writes rope_parameters, 4 a top-level rope_theta
    assert config.get("rope_parameters", config).get("rope_theta") == c.rope_base
    assert config["attention_bias"] is config["mlp_bias"] is c.bias
    assert config["tie_word_embeddings"] is c.tie_weights

    hf = load_hf(out)
    idx = torch.randint(0, vocab_size, (2, c.block_size), generator=torch.Generator().manual_seed(0))
    assert_same_logits(model, hf, idx, vocab_size)
    # and token by token, through both KV caches: greedy continuations of a prompt agree
    prompt = idx[:1, :4]
    ours = model.generate(prompt, 12, temperature=0)
    theirs = hf.generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, do_sample=False, pad_token_id=0
    )
    assert ours.tolist() == theirs.tolist()


def test_export_of_a_bpe_llama_loads_with_gpt2s_tokenizer(tmp_path):
    model = random_gpt(**LLAMA, vocab_size=50304, bias=False, tie_weights=True)
    gpt2 = {"kind": "gpt2", "vocab_size": 50257}
    ckpt = write_checkpoint(model, tmp_path / "model.ckpt", tokenizer=gpt2)
    out = export(DictConfig({"ckpt_path": str(ckpt), "out_dir": str(tmp_path / "hf")}))
    assert {"vocab.json", "merges.txt"} <= {p.name for p in out.iterdir()}
    config = json.loads((out / "config.json").read_text())
    assert config["eos_token_id"] == config["bos_token_id"] == 50256  # GPT-2's <|endoftext|>, not Llama's 2
    ids = transformers.AutoTokenizer.from_pretrained(out).encode(SAMPLE)[:16]
    import tiktoken

    assert ids == tiktoken.get_encoding("gpt2").encode_ordinary(SAMPLE)[:16]
    assert_same_logits(model, load_hf(out), torch.tensor([ids]), 50257)


@pytest.mark.parametrize(
    "fields, llama",
    [
        ({"qk_norm": True}, "model.qk_norm=true (Llama has qk_norm=false)"),
        ({"logit_softcap": 15.0}, "model.logit_softcap=15.0 (Llama has logit_softcap=null)"),
        ({"mlp": "relu2"}, "model.mlp=relu2 (Llama has mlp=swiglu)"),
        ({"mlp": "gelu"}, "model.mlp=gelu (Llama has mlp=swiglu)"),
        ({"norm": "layernorm"}, "model.norm=layernorm (Llama has norm=rmsnorm)"),
        ({"position": "learned"}, "model.position=learned (Llama has position=rope)"),
    ],
)
def test_export_refuses_what_neither_gpt2_nor_llama_holds_naming_each_option(fields, llama):
    config = GPTConfig(block_size=16, vocab_size=64, n_layer=2, n_head=4, n_embd=32, **{**LLAMA, **fields})
    with pytest.raises(ValueError) as raised:
        hf_format(config, "run/best.ckpt")
    message = str(raised.value)
    assert message.startswith("ckpt_path=run/best.ckpt: nanogpt-export writes Hugging Face's GPT-2 or Llama")
    assert f"Llama's for {llama}; train with the components of one of them" in message
    assert "GPT-2's for model." in message and "\n" not in message
    if "position" in fields:  # GPT-2's positions, but Llama's norms and MLP: each format's misfits
        gpt2 = "GPT-2's for model.norm=rmsnorm, model.mlp=swiglu (GPT-2 has norm=layernorm, mlp=gelu)"
        assert gpt2 in message
