"""The model's components that tests try alone and all together (``test_components.py``; and
``test_hf_fields.py``, which needs a value of every field that is a component): GPTConfig fields, each
entry changing the GPT-2 default by what it names."""

# a cap that test_components' roughened logits (up to ~6) reach, so the tanh bends them; nanochat's 15
# would not
CAP = 3.0
MODERN = dict(
    position="rope",
    norm="rmsnorm",
    qk_norm=True,
    mlp="relu2",
    n_kv_head=2,
    logit_softcap=CAP,
    tie_weights=False,
)
COMPONENTS = {
    "gpt2": {},  # the default every other one changes one field of
    "rope": dict(position="rope"),
    "rmsnorm": dict(norm="rmsnorm"),
    "rmsnorm_no_gain": dict(norm="rmsnorm", norm_gain=False),
    "qk_norm": dict(qk_norm=True),
    "relu2": dict(mlp="relu2"),
    "swiglu": dict(mlp="swiglu"),
    "gqa": dict(n_kv_head=2),
    "mqa": dict(n_kv_head=1),
    "softcap": dict(logit_softcap=CAP),
    "untied": dict(tie_weights=False),
    # nanochat's set (configs/ablation/modern.yaml) with grouped-query attention
    "modern": MODERN,
    # the alternatives: SwiGLU, multi-query, gain-free norms (nanochat's RMSNorm), no biases
    "modern_swiglu_mqa": {**MODERN, "mlp": "swiglu", "n_kv_head": 1, "norm_gain": False, "bias": False},
}
