"""notebooks/04_model_anatomy.ipynb, run top to bottom in a fresh clone: its numbers, checked here."""

import json
from pathlib import Path

import pytest

from nanogpt import CONFIG_DIR

from .helpers.notebooks import execute, fresh_clone, shown

# run after the notebook's own cells, in its kernel: what the test checks, as one JSON line
PROBE = """\
import json
print(json.dumps({
    "run": str(RUN),
    "configs": list(params.index),
    "params": {name: int(n) for name, n in params["total"].items()},
    "lm_head_params": {name: int(n) for name, n in params["lm_head"].items()},
    "component_flops": {name: float(n) for name, n in flops[FLOP_PARTS].sum(axis=1).items()},
    "measured_flops": {name: float(n) for name, n in flops_check["flops_per_token()"].items()},
    "attention_shape": list(attention.shape),
    "row_sum_error": (attention.sum(-1) - 1).abs().max().item(),
    "above_diagonal": attention.triu(diagonal=1).abs().max().item(),
    "tokens_equal": torch.equal(outputs[True], outputs[False]),
    "new_tokens": outputs[True].size(1) - prompt.size(1),
    "speedup": speedup,
}))
"""


def gpt2_params(n_layer: int, n_embd: int, vocab_size: int, block_size: int) -> int:
    """GPT-2's parameter count with biases and a tied output layer, from its shapes alone."""
    C = n_embd
    # per block: c_attn 3C^2 + 3C, c_proj C^2 + C, c_fc 4C^2 + 4C, c_proj 4C^2 + C, two LayerNorms 4C
    block = 12 * C * C + 13 * C
    return n_layer * block + vocab_size * C + block_size * C + 2 * C  # + wte, wpe, ln_f


@pytest.mark.nightly  # a 250-step training run, attention maps and generation timings: about 40 s
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_anatomy_notebook_runs_in_a_fresh_clone(shakespeare_path, tmp_path, monkeypatch):
    notebook = fresh_clone("04_model_anatomy.ipynb", tmp_path, monkeypatch, shakespeare_path)
    clone = notebook.parents[1]
    # a failing cell, the notebook's own asserts included, fails the test
    nb, values = execute(notebook, PROBE)

    # one row per shipped model config
    shipped = sorted(p.stem for p in Path(CONFIG_DIR, "model").glob("*.yaml"))
    assert sorted(values["configs"]) == shipped
    params = values["params"]
    # GPT-2 124M, its vocabulary padded to 50304; gpt2_pretrained is OpenAI's, unpadded (50257)
    assert params["gpt2"] == gpt2_params(12, 768, 50304, 1024)
    assert abs(params["gpt2"] / 124.4e6 - 1) < 0.01
    assert params["gpt2_pretrained"] == gpt2_params(12, 768, 50257, 1024)
    assert params["gpt2_xl"] == gpt2_params(48, 1600, 50304, 1024)
    # tied: counted with the embedding; the modern presets have a head of their own (vocabulary x width)
    untied = {"gpt_modern": 65 * 128, "baby_gpt_modern": 65 * 384}
    assert values["lm_head_params"] == {name: untied.get(name, 0) for name in shipped}
    # the per-component FLOPs add up to torch's count
    for name in shipped:
        assert values["component_flops"][name] == pytest.approx(values["measured_flops"][name], rel=0.01)

    # attention probabilities of the run the notebook trained itself
    run = Path(values["run"])
    assert run.parent == clone / "runs" / "notebook_anatomy"
    assert json.loads((run / "result.json").read_text())["step"] == 250
    assert (clone / "data" / "shakespeare_char").is_dir()
    line = "ROMEO:\nBut soft, what light through yonder window breaks?"
    assert values["attention_shape"] == [4, 4, len(line), len(line)]  # layers, heads, queries, keys
    assert values["row_sum_error"] < 1e-5
    assert values["above_diagonal"] == 0.0  # causal

    # the KV cache gives the tokens of full recomputation
    assert values["tokens_equal"] and values["new_tokens"] == 200
    assert values["speedup"] > 0
    assert shown(nb, "image/png") >= 2  # the parameter/FLOP charts and the attention maps
