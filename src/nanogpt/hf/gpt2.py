"""GPT-2 checkpoints of Hugging Face ``transformers``, in (``model.init_from``) and out (``nanogpt-export``).

Our :class:`~nanogpt.model.GPT` and ``transformers``' ``GPT2LMHeadModel`` are one architecture, and
nanoGPT named its weights after Hugging Face's, so a state dict converts key for key. What differs:

- HF's ``Conv1D`` stores a weight as (in, out), the transpose of ``nn.Linear``'s (out, in): the
  attention's ``c_attn`` and ``c_proj`` and the MLP's ``c_fc`` and ``c_proj``;
- HF's GPT-2 always has biases; a model of ours trained with ``bias=False`` exports zero ones;
- GPT-2 was trained with the tanh approximation of GELU (HF's ``gelu_new``), ours defaults to the
  exact one: ``GPTConfig.gelu_approximate`` says which, and travels to HF as ``activation_function``;
- GPT-2 has no place for our other components (:data:`GPT2_COMPONENTS`): a model with rotary
  positions, RMSNorm, another MLP, grouped-query attention or a logit cap neither starts from its
  weights nor exports to its format (``nanogpt-export`` writes one with rotary positions, RMSNorm
  and SwiGLU as Llama, :mod:`nanogpt.hf.llama`).

Which GPTConfig field is which, and which GPT2Config field carries it, is the table of
:mod:`nanogpt.hf.fields`: both directions read it.

``transformers`` is an optional extra (``pip install 'nanogpt[hf]'``), imported only by the functions
that need it, so neither ``import nanogpt`` nor a run without ``init_from`` pays for it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import pickle
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from nanogpt import CONFIG_DIR
from nanogpt.hf.fields import (
    ACTIVATIONS,
    GPT2,
    INIT_FROM,
    carried,
    fields_from_hf,
    hf_values,
    misfits,
    required,
)
from nanogpt.model import GPT

if TYPE_CHECKING:
    from transformers import GPT2Config, GPT2LMHeadModel

log = logging.getLogger(__name__)

# OpenAI's four checkpoints on the Hugging Face hub, under their canonical ids. Their sizes are known
# without the network, so a config can be checked, and a run resumed, offline: the layers, heads,
# width and context are those of configs/model/gpt2.yaml, gpt2_medium.yaml, gpt2_large.yaml and
# gpt2_xl.yaml (the recipes that train the same shapes from scratch), read from there.
GPT2_HUB_IDS = {
    "gpt2": "openai-community/gpt2",  # 124M parameters
    "gpt2-medium": "openai-community/gpt2-medium",  # 355M
    "gpt2-large": "openai-community/gpt2-large",  # 774M
    "gpt2-xl": "openai-community/gpt2-xl",  # 1558M
}

# The GPTConfig fields a pretrained checkpoint fixes, those init_from carries (nanogpt.hf.fields): the
# weights' shapes and GPT-2's maths (biases, tied embeddings, tanh GELU); dropout stays the user's choice.
SHAPE_FIELDS = tuple(carried(INIT_FROM))
# What OpenAI's checkpoints fix beyond their sizes: GPT-2's biases and tied embeddings, the tokenizer's
# 50257 tokens unpadded (the recipes pad them to 50304 for faster matmuls), and the tanh GELU that
# GPT-2 was trained with (the recipes use the exact one).
GPT2_PRETRAINED = dict(vocab_size=50257, bias=True, tie_weights=True, gelu_approximate="tanh")
# the rest, their sizes, are those of their recipes
GPT2_SIZE_FIELDS = tuple(k for k in SHAPE_FIELDS if k not in GPT2_PRETRAINED)

# GPT-2's choice of each component GPTConfig offers (GPTConfig's defaults), the values init_from
# requires (nanogpt.hf.fields). OpenAI's weights and HF's GPT2LMHeadModel have no place for another: no
# RoPE, RMSNorm, gain-less norms, query/key norms, other MLPs, fewer key/value heads or logit cap.
GPT2_COMPONENTS = required(INIT_FROM)

# weights HF keeps as Conv1D, (in, out): transposed against our nn.Linear's (out, in)
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# the rows of these are tokens: the export keeps the tokenizer's, dropping our padding rows
VOCAB_ROWS = ("transformer.wte.weight", "lm_head.weight")

# GPT-2's BPE files as tiktoken downloads and caches them (tiktoken_ext/openai_public.py, gpt2()):
# its encoder.json is Hugging Face's vocab.json and its vocab.bpe is merges.txt.
GPT2_BPE_FILES = {
    "vocab.json": (
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    ),
    "merges.txt": (
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
        "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    ),
}

LOCAL_FOLDER_FIX = (
    "model.init_from=/path/to/folder, a folder written by save_pretrained. Make one where there is "
    'network: python -c "from transformers import GPT2LMHeadModel; GPT2LMHeadModel.from_pretrained('
    "'openai-community/gpt2').save_pretrained('gpt2-local')\""
)


def import_transformers() -> Any:
    """The ``transformers`` package, or an error saying how to install the optional extra."""
    try:
        import transformers
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "GPT-2 checkpoints (model.init_from, nanogpt-export) need Hugging Face transformers, an "
            "optional extra: pip install 'nanogpt[hf]'"
        ) from err
    return transformers


def checkpoint_folder(init_from: str) -> Path:
    """The local checkpoint folder ``init_from`` names; an error for a name that is neither one."""
    path = Path(init_from).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"model.init_from={init_from} is a folder without config.json; pass a folder that "
                "save_pretrained wrote (config.json and model.safetensors), or a name: "
                + ", ".join(GPT2_HUB_IDS)
            )
        return path
    if os.sep in init_from or init_from.startswith((".", "~")):
        raise FileNotFoundError(f"model.init_from={init_from}: no folder there; pass {LOCAL_FOLDER_FIX}")
    raise ValueError(
        f"model.init_from={init_from!r} is neither a GPT-2 checkpoint nor a folder; pass one of "
        + ", ".join(f"model.init_from={name}" for name in GPT2_HUB_IDS)
        + ", or model.init_from=/path/to/folder (a folder written by save_pretrained)"
    )


def config_from_hf(hf_config: GPT2Config, source: str) -> dict[str, Any]:
    """The :data:`SHAPE_FIELDS` of our GPTConfig for a Hugging Face GPT-2 config.

    A GPT-2 variant our model cannot reproduce exactly (another activation, MLP width, LayerNorm
    epsilon or attention scaling) is refused rather than loaded into slightly different maths.
    """
    c = hf_config
    if getattr(c, "model_type", None) != "gpt2":
        raise ValueError(
            f"model.init_from={source} holds a {getattr(c, 'model_type', '?')!r} model, not GPT-2; "
            "pass a GPT-2 checkpoint (" + ", ".join(GPT2_HUB_IDS) + ", or a folder of one)"
        )
    unsupported = []
    if c.activation_function not in ACTIVATIONS:
        ours = ", ".join(ACTIVATIONS)
        unsupported.append(f"activation_function={c.activation_function!r} (we have {ours})")
    if c.n_inner not in (None, 4 * c.n_embd):
        unsupported.append(f"n_inner={c.n_inner} (our MLP is 4 * n_embd = {4 * c.n_embd} wide)")
    if not math.isclose(c.layer_norm_epsilon, 1e-5):
        unsupported.append(f"layer_norm_epsilon={c.layer_norm_epsilon} (ours is 1e-5)")
    if not c.scale_attn_weights or c.scale_attn_by_inverse_layer_idx:
        unsupported.append("attention scaled other than by 1/sqrt(head size)")
    if c.add_cross_attention:
        unsupported.append("cross-attention")
    if unsupported:
        raise ValueError(
            f"model.init_from={source} is a GPT-2 variant nanogpt's model cannot reproduce: "
            + "; ".join(unsupported)
            + ". Pass a standard GPT-2 checkpoint"
        )
    return fields_from_hf(c, INIT_FROM)


def model_recipe(name: str) -> dict[str, Any]:
    """The fields of ``configs/model/<name>.yaml``, over those of the files its defaults list names."""
    own = yaml.safe_load((Path(CONFIG_DIR) / "model" / f"{name}.yaml").read_text())
    defaults = own.pop("defaults", [])  # other files of the model group, in order
    fields: dict[str, Any] = {}
    # as Hydra composes them: the file's own values last, unless its list places _self_ elsewhere
    for entry in defaults if "_self_" in defaults else [*defaults, "_self_"]:
        fields.update(own if entry == "_self_" else model_recipe(entry))
    return fields


def pretrained_shape(init_from: str) -> dict[str, Any]:
    """The :data:`SHAPE_FIELDS` that checkpoint ``init_from`` fixes, without loading its weights.

    A GPT-2 name needs no network (its shape is known); a folder needs only its ``config.json``.
    """
    if init_from in GPT2_HUB_IDS:
        recipe = model_recipe(init_from.replace("-", "_"))  # gpt2-medium: configs/model/gpt2_medium.yaml
        return {**{k: recipe[k] for k in GPT2_SIZE_FIELDS}, **GPT2_PRETRAINED}
    folder = checkpoint_folder(init_from)
    return config_from_hf(import_transformers().AutoConfig.from_pretrained(folder), init_from)


def apply_pretrained_shape(
    model_fields: dict[str, Any], shape: dict[str, Any], init_from: str
) -> dict[str, Any]:
    """A copy of ``model_fields`` with the checkpoint's ``shape``; an error where they disagree.

    A field left null (as in ``configs/model/gpt2_pretrained.yaml``) takes the checkpoint's value; a
    value that differs from it (an override, or a from-scratch model config such as the default
    ``baby_gpt``) would not fit the weights, so the error names ``model=gpt2_pretrained`` and the values.
    The other fields (``dropout``, ``init_from``, the components) are returned as given; a component
    GPT-2 does not have (``model.position=rope``, ...) is refused, as its weights have no place for it,
    and so is a field :mod:`nanogpt.hf.fields` does not list. An absent field is GPTConfig's default,
    which is GPT-2's, so the hyperparameters of a checkpoint saved before the field existed are too.
    """
    asked = {k: model_fields.get(k) for k in SHAPE_FIELDS}
    conflicts = {k: v for k, v in asked.items() if v is not None and v != shape[k]}
    if conflicts:
        overrides = as_overrides(conflicts)
        has = ", ".join(f"{k}={hydra_value(shape[k])}" for k in conflicts)
        raise ValueError(
            f"model.init_from={init_from} fixes the model's shape to the checkpoint's ({has}), but the "
            f"config asks for {overrides}; start from model=gpt2_pretrained, which leaves every shape field "
            "null to be the checkpoint's, and drop any override of them (nanogpt-train model=gpt2_pretrained "
            f"model.init_from={init_from} data=shakespeare_gpt2)"
        )
    fields = {**model_fields, **{k: shape[k] for k in SHAPE_FIELDS}}
    found = misfits(INIT_FROM, {k: v for k, v in fields.items() if k != "init_from"})
    if found:
        asked = as_overrides(found)
        gpt2 = as_overrides({k: GPT2_COMPONENTS[k] for k in found}, sep=" ")
        raise ValueError(
            f"model.init_from={init_from} starts from GPT-2's weights, which have no place for {asked}; "
            f"pass GPT-2's {gpt2}, or train that model from scratch (e.g. model=gpt2, which has no init_from)"
        )
    return fields


def hydra_value(value: Any) -> str:
    """``value`` as a command-line override spells it (``true``, not ``True``; ``null``, not ``None``)."""
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def as_overrides(fields: dict[str, Any], sep: str = ", ") -> str:
    """``fields`` as the command-line overrides that set them: ``model.bias=true, model.n_head=12``."""
    return sep.join(f"model.{k}={hydra_value(v)}" for k, v in fields.items())


def check_gpt2_tokenizer(tokenizer: str | None, init_from: str) -> None:
    """Refuse to pair GPT-2's weights with a tokenizer other than the BPE they were trained on."""
    if tokenizer != "gpt2":
        raise ValueError(
            f"model.init_from={init_from} starts from GPT-2's weights, which read GPT-2 BPE tokens, but "
            f"data.tokenizer={tokenizer}; pass data.tokenizer=gpt2 (e.g. data=shakespeare_gpt2)"
        )


def load_hf_gpt2(init_from: str) -> GPT2LMHeadModel:
    """``GPT2LMHeadModel.from_pretrained`` for a GPT-2 name or folder, with errors that name the fix."""
    transformers = import_transformers()
    source = GPT2_HUB_IDS.get(init_from) or checkpoint_folder(init_from)
    try:
        return transformers.GPT2LMHeadModel.from_pretrained(source)
    except pickle.UnpicklingError as err:
        # torch.load(weights_only=True) refused a pickled object other than a tensor: loading it
        # would run code. torch's own message ends by suggesting weights_only=False; we do not.
        found = re.search(r"GLOBAL (\S+)", str(err))  # what it would have called
        what = f", such as {found.group(1)}" if found else ""
        raise ValueError(
            f"model.init_from={init_from}: its pytorch_model.bin holds code (pickled objects other than "
            f"tensors{what}), so it was not loaded; pass a folder with model.safetensors (weights only, "
            "no code), from a source you trust"
        ) from err
    except OSError as err:
        if isinstance(source, Path):  # a local folder that is not a complete checkpoint
            raise FileNotFoundError(
                f"model.init_from={init_from} could not be loaded ({err}); pass a folder that "
                "save_pretrained wrote, with config.json and model.safetensors"
            ) from err
        # offline (HF_HUB_OFFLINE=1 or no network) and not in the cache
        raise FileNotFoundError(
            f"model.init_from={init_from}: could not download {source} from the Hugging Face hub and no "
            f"copy is in its cache (no network?). Pass {LOCAL_FOLDER_FIX}"
        ) from err


def state_dict_from_hf(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ``GPT2LMHeadModel`` state dict in our GPT's keys and layouts (views, no copies)."""
    return {k: v.t() if k.endswith(CONV1D_WEIGHTS) else v for k, v in hf_state.items()}


def load_pretrained(init_from: str) -> dict[str, torch.Tensor]:
    """The weights of checkpoint ``init_from`` in our keys and layouts, for ``GPT.load_state_dict``.

    They fit a model of :func:`pretrained_shape` (which :func:`apply_pretrained_shape` gives a
    config). This downloads them, or reads the folder: check the config first, and skip it when
    resuming, as the run's own checkpoint holds the weights then.
    """
    hf = load_hf_gpt2(init_from)
    shape = pretrained_shape(init_from)
    assert config_from_hf(hf.config, init_from) == shape, f"{init_from}'s config is not {shape}"
    log.info("model.init_from=%s: starting from its pretrained weights", init_from)
    return state_dict_from_hf(hf.state_dict())


def hf_config_from_gpt(model: GPT, vocab_size: int, eos_token_id: int | None) -> GPT2Config:
    """The Hugging Face GPT-2 config of our ``model``, with its vocabulary cut to ``vocab_size``."""
    c = dataclasses.replace(model.config, vocab_size=vocab_size)  # past it: our padding rows
    return import_transformers().GPT2Config(
        **hf_values(c, GPT2),  # n_positions, n_embd, ...: every field GPT-2 carries (nanogpt.hf.fields)
        n_inner=None,  # 4 * n_embd, as ours
        layer_norm_epsilon=1e-5,  # nn.LayerNorm's default, which ours uses
        bos_token_id=eos_token_id,
        eos_token_id=eos_token_id,
    )


def hf_model_from_gpt(model: GPT, vocab_size: int, eos_token_id: int | None = None) -> GPT2LMHeadModel:
    """Our ``model`` as a ``GPT2LMHeadModel`` whose logits over the first ``vocab_size`` tokens are ours.

    The rows past ``vocab_size`` (the tokenizer's size) are our padding for faster matmuls: no token
    has them, no target ever was one, so they are dropped and the folder's vocabulary matches its
    tokenizer, as Hugging Face's tools expect. A model without biases gets zero ones, and one whose
    LayerNorms have no gain gets gains of one (and zero biases): GPT-2's always has both.
    """
    c = model.config
    found = misfits(GPT2, dataclasses.asdict(c))
    assert not found, f"GPT-2 has no place for {found}: the caller checks the components first"
    if vocab_size > c.vocab_size:
        raise ValueError(f"a {vocab_size}-token vocabulary does not fit a {c.vocab_size}-row model")
    hf = import_transformers().GPT2LMHeadModel(hf_config_from_gpt(model, vocab_size, eos_token_id))
    ours = dict(model.state_dict())
    with torch.no_grad():
        for name, tensor in hf.state_dict().items():  # views of hf's parameters: copy_ writes into them
            if name not in ours:
                gainless = not c.norm_gain and ".ln_" in name  # an affine-free LayerNorm's weight and bias
                assert gainless or (name.endswith(".bias") and not c.bias), f"no weight of ours for {name}"
                tensor.fill_(0.0 if name.endswith(".bias") else 1.0)
                continue
            value = ours.pop(name)
            if name.endswith(CONV1D_WEIGHTS):
                value = value.t()
            if name in VOCAB_ROWS:
                value = value[:vocab_size]
            tensor.copy_(value)
    assert not ours, f"weights of ours with no place in GPT2LMHeadModel: {sorted(ours)}"
    return hf.eval()


def write_gpt2_tokenizer(folder: Path, model_max_length: int) -> None:
    """Write GPT-2's BPE tokenizer into ``folder`` (beside its ``config.json``) for ``AutoTokenizer``.

    The files are tiktoken's own: read from its cache (``TIKTOKEN_CACHE_DIR``) or downloaded once,
    and checked against their hashes.
    """
    from tiktoken.load import read_file_cached

    for name, (url, sha256) in GPT2_BPE_FILES.items():
        try:
            data = read_file_cached(url, sha256)
        except Exception as err:  # tiktoken raises plain requests errors when it cannot download
            raise FileNotFoundError(
                f"GPT-2's BPE file {url.rsplit('/', 1)[1]} (for {name}) is not in tiktoken's cache and "
                "could not be downloaded (no network?); put it there and set "
                "TIKTOKEN_CACHE_DIR=/path/to/tiktoken-cache"
            ) from err
        (folder / name).write_bytes(data)
    # Let transformers write its own tokenizer_config.json (and tokenizer.json) for these files.
    transformers = import_transformers()
    tokenizer = transformers.GPT2TokenizerFast.from_pretrained(folder, model_max_length=model_max_length)
    tokenizer.save_pretrained(folder)
