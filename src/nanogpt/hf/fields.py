"""What Hugging Face's formats do with each :class:`~nanogpt.model.GPTConfig` field: the table :data:`FIELDS`.

A field leaves nanogpt three ways: ``nanogpt-export`` as a GPT-2 folder (:mod:`nanogpt.hf.gpt2`), as a
Llama folder (:mod:`nanogpt.hf.llama`), and, the other way round, ``model.init_from`` starting from a
GPT-2 checkpoint. For each, the field's line says one of:

- :class:`Carried`: any value travels, as the Hugging Face config's field(s) of that name;
- :class:`InWeights`: any value travels, though the format has no switch for it: the weights it is
  written with compute the same (a model without biases exports zero ones);
- :class:`Required`: the format has one value; any other is refused, naming ``model.<field>=<value>``;
- :class:`Ignored`: nothing there reads it, for the reason given (``dropout`` acts only in training).

The export builds each Hugging Face config from the carried fields, refuses the others by the required
ones, and ``init_from`` takes the checkpoint's value of every field it carries (the shape fields a
pretrained checkpoint fixes). A field this table does not list is refused by all three, whatever its
value, so a new field is never dropped without a word; ``tests/test_hf_fields.py`` fails until it has
its line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from nanogpt.model import GPTConfig


@dataclass(frozen=True)
class Carried:
    """Any value travels, as the Hugging Face config's field ``hf`` (or each of several); no name: the
    format fixes it (read by :attr:`from_hf`).

    ``to_hf`` (an export) computes the Hugging Face value from our config, when it is not the field's
    value as it is; ``from_hf`` (``init_from``) computes ours from the checkpoint's config.
    """

    hf: str | tuple[str, ...] = ()
    to_hf: Callable[[GPTConfig], Any] | None = None
    from_hf: Callable[[Any], Any] | None = None
    how: str = ""  # when the Hugging Face value is not ours as it is

    @property
    def names(self) -> tuple[str, ...]:
        return (self.hf,) if isinstance(self.hf, str) else self.hf


@dataclass(frozen=True)
class InWeights:
    """Any value travels: the format has no switch for it, but the weights written compute the same."""

    how: str


@dataclass(frozen=True)
class Required:
    """The format holds only ``value`` (or the value of the field ``also`` names); another is refused."""

    value: Any
    also: str | None = None


@dataclass(frozen=True)
class Ignored:
    """Any value: nothing in the format reads it, because ``why``."""

    why: str


Rule = Carried | InWeights | Required | Ignored


class Treatment(NamedTuple):
    """What each destination does with one field."""

    gpt2: Rule  # nanogpt-export as GPT2LMHeadModel
    llama: Rule  # nanogpt-export as LlamaForCausalLM
    init_from: Rule  # model.init_from: starting from a GPT-2 checkpoint's config and weights


GPT2, LLAMA, INIT_FROM = Treatment._fields  # the destinations, as Treatment names them

# Hugging Face GPT-2's activation_function -> GPTConfig.gelu_approximate (gelu_new and gelu_pytorch_tanh
# are one function), and back
ACTIVATIONS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}
GELU_TO_HF = {"tanh": "gelu_new", "none": "gelu"}

UNREAD_ROPE_BASE = Ignored("read only with position=rope, and GPT-2's positions are learned")
TOKENIZER_ROWS = "the tokenizer's size: the export drops our padding rows past it"
NO_GAIN = InWeights("a norm without a gain exports gains of one")

# Every GPTConfig field, in its order. GPT-2 export and init_from read the same GPT2Config fields.
FIELDS: dict[str, Treatment] = {
    # --- the shapes: every format holds them, and a GPT-2 checkpoint fixes them ---
    "block_size": Treatment(
        gpt2=Carried("n_positions"),
        llama=Carried("max_position_embeddings"),  # our rope tables' length: the model reads no more
        init_from=Carried("n_positions"),
    ),
    "vocab_size": Treatment(
        gpt2=Carried("vocab_size", how=TOKENIZER_ROWS),
        llama=Carried("vocab_size", how=TOKENIZER_ROWS),
        init_from=Carried("vocab_size"),
    ),
    "n_layer": Treatment(Carried("n_layer"), Carried("num_hidden_layers"), Carried("n_layer")),
    "n_head": Treatment(Carried("n_head"), Carried("num_attention_heads"), Carried("n_head")),
    "n_embd": Treatment(Carried("n_embd"), Carried("hidden_size"), Carried("n_embd")),
    # --- training only ---
    "dropout": Treatment(
        gpt2=Carried(("resid_pdrop", "embd_pdrop", "attn_pdrop")),
        llama=Carried("attention_dropout", how="Llama's only dropout: its fine-tunes drop less than ours"),
        init_from=Ignored("training only: the fine-tune's choice, not the checkpoint's"),
    ),
    # --- GPT-2's maths, which the formats hold in their own ways ---
    "bias": Treatment(
        gpt2=InWeights("Hugging Face's GPT-2 always has biases: a model without them exports zero ones"),
        llama=Carried(("attention_bias", "mlp_bias")),
        init_from=Carried(from_hf=lambda hf: True, how="Hugging Face's GPT-2 always has biases"),
    ),
    "tie_weights": Treatment(
        Carried("tie_word_embeddings"), Carried("tie_word_embeddings"), Carried("tie_word_embeddings")
    ),
    "gelu_approximate": Treatment(
        gpt2=Carried("activation_function", to_hf=lambda c: GELU_TO_HF[c.gelu_approximate]),
        llama=Ignored("read only by mlp=gelu, and Llama's MLP is SwiGLU"),
        init_from=Carried("activation_function", from_hf=lambda hf: ACTIVATIONS[hf.activation_function]),
    ),
    # --- the components: GPT-2's are GPTConfig's defaults; Llama's are rope, rmsnorm and swiglu ---
    "position": Treatment(Required("learned"), Required("rope"), Required("learned")),
    "rope_base": Treatment(
        gpt2=UNREAD_ROPE_BASE,
        # transformers 5 keeps it as rope_parameters["rope_theta"], 4 as rope_theta: both take this
        llama=Carried("rope_theta", to_hf=lambda c: float(c.rope_base)),
        init_from=UNREAD_ROPE_BASE,
    ),
    "norm": Treatment(Required("layernorm"), Required("rmsnorm"), Required("layernorm")),
    # GPT-2's checkpoint has trained gains, which a gain-less model would drop
    "norm_gain": Treatment(gpt2=NO_GAIN, llama=NO_GAIN, init_from=Required(True)),
    "qk_norm": Treatment(Required(False), Required(False), Required(False)),
    "mlp": Treatment(Required("gelu"), Required("swiglu"), Required("gelu")),
    # one key/value head per query head (n_kv_head equal to n_head) is GPT-2's multi-head attention
    "n_kv_head": Treatment(
        gpt2=Required(None, also="n_head"),
        llama=Carried("num_key_value_heads", to_hf=lambda c: c.kv_heads),
        init_from=Required(None, also="n_head"),
    ),
    "logit_softcap": Treatment(Required(None), Required(None), Required(None)),
}


def treatment(name: str) -> Treatment:
    """The line of field ``name``; an error for a field :data:`FIELDS` does not list."""
    if name not in FIELDS:
        raise ValueError(
            f"model.{name} is a field that src/nanogpt/hf/fields.py's FIELDS does not list, so it is not "
            "known what Hugging Face's GPT-2 and Llama formats and model.init_from do with it: refused "
            "rather than dropped. Add its line to FIELDS (docs/extending.md)"
        )
    return FIELDS[name]


def rules(destination: str) -> dict[str, Rule]:
    """Every GPTConfig field's rule at ``destination`` (a :class:`Treatment` field name)."""
    return {f.name: getattr(treatment(f.name), destination) for f in dataclasses.fields(GPTConfig)}


def carried(destination: str) -> dict[str, Carried]:
    """The fields ``destination`` carries, with how."""
    return {name: rule for name, rule in rules(destination).items() if isinstance(rule, Carried)}


def required(destination: str) -> dict[str, Any]:
    """The fields ``destination`` holds only one value of, with that value."""
    return {name: rule.value for name, rule in rules(destination).items() if isinstance(rule, Required)}


def misfits(destination: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The GPTConfig ``fields`` whose value ``destination`` has no place for, with their values.

    An absent field is GPTConfig's default; a field :data:`FIELDS` does not list is an error, whatever
    its value (:func:`treatment`).
    """
    defaults = {f.name: f.default for f in dataclasses.fields(GPTConfig)}
    found = {}
    for name in {**defaults, **fields}:
        rule = getattr(treatment(name), destination)
        value = fields.get(name, defaults.get(name))
        if not isinstance(rule, Required) or value == rule.value:
            continue
        if rule.also is not None and value == fields.get(rule.also, defaults[rule.also]):
            continue
        found[name] = value
    return found


def hf_values(config: GPTConfig, destination: str) -> dict[str, Any]:
    """The Hugging Face config's values of every field of ``config`` that export ``destination`` carries."""
    values = {}
    for name, rule in carried(destination).items():
        value = rule.to_hf(config) if rule.to_hf else getattr(config, name)
        values.update(dict.fromkeys(rule.names, value))
    return values


def fields_from_hf(hf_config: Any, destination: str = INIT_FROM) -> dict[str, Any]:
    """Our values of every field ``destination`` carries, read from a Hugging Face config."""
    return {
        name: rule.from_hf(hf_config) if rule.from_hf else getattr(hf_config, rule.names[0])
        for name, rule in carried(destination).items()
    }
