"""Every GPTConfig field says what leaving for Hugging Face does with it (``nanogpt.hf.fields.FIELDS``),
and each line's claim holds: a carried value arrives, one held in the weights gives the same logits,
a required one refuses any other value naming it, and an ignored one changes nothing.

No Trainer and no files: each case builds a tiny model and its ``transformers`` twin in memory.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from nanogpt.hf.export import FORMATS, hf_format
from nanogpt.hf.fields import (
    FIELDS,
    GPT2,
    INIT_FROM,
    LLAMA,
    Carried,
    Ignored,
    InWeights,
    Required,
    Rule,
    Treatment,
    misfits,
    required,
)
from nanogpt.hf.gpt2 import (
    apply_pretrained_shape,
    config_from_hf,
    hf_config_from_gpt,
    hf_model_from_gpt,
    hydra_value,
    state_dict_from_hf,
)
from nanogpt.model import GPT, GPTConfig

from .helpers.components import COMPONENTS
from .helpers.hf import random_gpt

pytest.importorskip("transformers")

SHAPE = dict(block_size=16, vocab_size=64, n_layer=2, n_head=4, n_embd=32)  # random_gpt's
# a value to try of each field that is no component (tests/helpers/components.py's COMPONENTS gives theirs)
OTHER = dict(
    block_size=24,
    vocab_size=72,
    n_layer=3,
    n_head=2,
    n_embd=48,
    dropout=0.1,
    gelu_approximate="tanh",
    rope_base=500.0,
)


def unlisted(config_class: type) -> list[str]:
    """The fields of ``config_class`` that FIELDS has no line for."""
    return [f.name for f in dataclasses.fields(config_class) if f.name not in FIELDS]


@dataclasses.dataclass
class WithANewComponent(GPTConfig):
    """GPTConfig as it would be the day someone adds a field and forgets its line in FIELDS."""

    new_component: bool = False


def test_every_gptconfig_field_has_a_rule_for_every_destination():
    assert not unlisted(GPTConfig), (
        f"GPTConfig fields with no line in src/nanogpt/hf/fields.py's FIELDS: {unlisted(GPTConfig)}; say "
        "what GPT-2 export, Llama export and init_from do with each (docs/extending.md)"
    )
    stale = sorted(set(FIELDS) - {f.name for f in dataclasses.fields(GPTConfig)})
    assert not stale, f"FIELDS has lines for fields GPTConfig no longer has: {stale}"
    for name, treatment in FIELDS.items():
        assert isinstance(treatment, Treatment), name
        wrong = [d for d in Treatment._fields if not isinstance(getattr(treatment, d), Rule)]
        assert not wrong, f"FIELDS[{name!r}] has no rule for {wrong}"
        # an export writes a carried value somewhere, and init_from reads it from somewhere
        for destination in (GPT2, LLAMA):
            rule = getattr(treatment, destination)
            assert not isinstance(rule, Carried) or rule.names, (
                f"FIELDS[{name!r}].{destination} names no field"
            )
        rule = treatment.init_from
        assert not isinstance(rule, Carried) or rule.names or rule.from_hf, (
            f"FIELDS[{name!r}].init_from reads nothing"
        )
    assert unlisted(WithANewComponent) == ["new_component"]  # and the check sees a new one


def test_a_field_the_table_does_not_list_is_refused_by_every_destination_not_dropped():
    config = WithANewComponent(**SHAPE)  # at its default value, too: nothing says the default is harmless
    fix = r"model.new_component is a field that src/nanogpt/hf/fields.py's FIELDS does not list.*Add its line"
    with pytest.raises(ValueError, match=fix):
        hf_format(config, "run/best.ckpt")
    for destination in (GPT2, LLAMA):
        with pytest.raises(ValueError, match=fix):
            misfits(destination, dataclasses.asdict(config))
    shape = config_from_hf(hf_config_from_gpt(GPT(GPTConfig(**SHAPE)), 64, None), "tiny")
    with pytest.raises(ValueError, match=fix):
        apply_pretrained_shape({"init_from": "tiny", "new_component": False}, shape, "tiny")


def base_fields(destination: str) -> dict[str, Any]:
    """A tiny model the destination holds: GPTConfig's defaults, with the values it requires."""
    return {**SHAPE, **required(destination)}


def other_value(name: str, than: Any) -> Any:
    """A valid value of field ``name`` other than ``than``."""
    defaults = {f.name: f.default for f in dataclasses.fields(GPTConfig)}
    components = [fields[name] for fields in COMPONENTS.values() if name in fields]
    for value in (*([OTHER[name]] if name in OTHER else []), *components, defaults[name]):
        if value != than:
            return value
    raise AssertionError(
        f"no value of model.{name} to try but {than!r}: give its component an entry in "
        "tests/helpers/components.py's COMPONENTS (or this file's OTHER)"
    )


def hf_config_value(hf_config: Any, name: str) -> Any:
    if name == "rope_theta" and getattr(hf_config, "rope_parameters", None):  # transformers 5 keeps it there
        return hf_config.rope_parameters["rope_theta"]
    return getattr(hf_config, name)


def assert_same_logits(model: GPT, hf: torch.nn.Module) -> None:
    c = model.config
    idx = torch.randint(0, c.vocab_size, (2, c.block_size), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, model(idx)[0], atol=1e-5, rtol=0)


CASES = [(d, name) for d in Treatment._fields for name in FIELDS]


@pytest.mark.parametrize("destination, name", CASES, ids=[f"{d}-{n}" for d, n in CASES])
def test_each_rule_of_the_table_holds(destination, name):
    rule: Rule = getattr(FIELDS[name], destination)
    base = base_fields(destination)
    other = other_value(name, base.get(name, GPTConfig.__dataclass_fields__[name].default))
    if destination == INIT_FROM:
        check_init_from(rule, name, base, other)
    else:
        check_export(rule, destination, name, base, other)


def check_export(rule: Rule, destination: str, name: str, base: dict, other: Any) -> None:
    fmt, export = FORMATS[destination]  # its name, and the function that builds it
    model = random_gpt(**{**base, name: other})
    c = model.config
    if isinstance(rule, Required):
        value = hydra_value(other)
        assert misfits(destination, dataclasses.asdict(c)) == {name: other}
        with pytest.raises(ValueError) as raised:
            hf_format(c, "run/best.ckpt")
        message = str(raised.value)
        assert f"{fmt}'s for model.{name}={value}" in message, message
        assert f"{fmt} has {name}={hydra_value(rule.value)}" in message, message
        if rule.also is not None:  # the other field's value is accepted too
            same = random_gpt(**{**base, name: getattr(c, rule.also)})
            assert_same_logits(same, export(same, same.config.vocab_size))
        return
    hf = export(model, c.vocab_size)
    if isinstance(rule, Carried):  # the value arrives in the named config fields, and moved them
        before = export(random_gpt(**base), base["vocab_size"]).config
        for hf_name in rule.names:
            expected = rule.to_hf(c) if rule.to_hf else getattr(c, name)
            assert hf_config_value(hf.config, hf_name) == expected, hf_name
            assert hf_config_value(before, hf_name) != expected, f"{hf_name} did not move with model.{name}"
    else:
        assert isinstance(rule, (InWeights, Ignored)), rule
    assert_same_logits(model, hf)  # whatever the rule, what is exported computes what ours does


def check_init_from(rule: Rule, name: str, base: dict, other: Any) -> None:
    with torch.device("meta"):  # the config alone: no weights are needed
        shape = config_from_hf(hf_config_from_gpt(GPT(GPTConfig(**base)), base["vocab_size"], None), "tiny")
    asked = {"init_from": "tiny", name: other}
    if isinstance(rule, Carried):
        # the checkpoint's value: null takes it, and another is refused naming the fix
        assert apply_pretrained_shape({"init_from": "tiny", name: None}, shape, "tiny")[name] == shape[name]
        with pytest.raises(ValueError, match=rf"asks for model\.{name}=.*start from model=gpt2_pretrained"):
            apply_pretrained_shape(asked, shape, "tiny")
        if rule.names:  # and a GPT-2 config of ours with another value reads back as that value
            with torch.device("meta"):
                model = GPT(GPTConfig(**{**base, name: other}))
            assert (
                config_from_hf(hf_config_from_gpt(model, model.config.vocab_size, None), "tiny")[name]
                == other
            )
    elif isinstance(rule, Required):
        with pytest.raises(ValueError) as raised:
            apply_pretrained_shape(asked, shape, "tiny")
        value, gpt2 = hydra_value(other), hydra_value(rule.value)
        assert f"no place for model.{name}={value}; pass GPT-2's model.{name}={gpt2}" in str(raised.value)
        if rule.also is not None:
            apply_pretrained_shape({"init_from": "tiny", name: shape[rule.also]}, shape, "tiny")
    else:
        assert isinstance(rule, Ignored), rule  # the fine-tune keeps the value it asks for
        fields = apply_pretrained_shape(asked, shape, "tiny")
        assert fields.pop("init_from") == "tiny" and fields[name] == other
        # and it changes nothing: the checkpoint's weights give the checkpoint's logits
        hf = hf_model_from_gpt(random_gpt(**base), base["vocab_size"])
        model = GPT(GPTConfig(**fields)).eval()
        model.load_state_dict(state_dict_from_hf(hf.state_dict()))
        assert_same_logits(model, hf)
