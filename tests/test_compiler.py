"""compile: auto, the compile cache and the compiler check (src/nanogpt/training/compiler.py)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from nanogpt.model import GPTConfig
from nanogpt.runs.checkpoint import load_checkpoint
from nanogpt.training import compiler
from nanogpt.training.compiler import AUTO_MIN_STEPS, cache_dir, decide, step_marker, working_compiler
from nanogpt.training.job import train

from .helpers import TINY, compose_train


def always(answer):
    return lambda: answer


def never_asked():
    raise AssertionError("the compiler was looked for although the answer could not change the decision")


@pytest.mark.parametrize(
    "setting, steps, warm, compiler, compiles, why",
    [
        (False, 10**6, True, never_asked, False, "compile=false"),
        (True, 10, False, always("/usr/bin/g++"), True, "compile=true"),
        # a short run on a cold cache: eager, without looking for a compiler
        ("auto", 2000, False, never_asked, False, "too few to pay for a first compile"),
        ("auto", 2000, True, always("/usr/bin/g++"), True, "kernels in the cache from an earlier run"),
        ("auto", AUTO_MIN_STEPS, False, always("/usr/bin/g++"), True, "steps pay for a first compile"),
        ("auto", AUTO_MIN_STEPS, False, always(None), False, "no working C++ compiler was found"),
        ("auto", 2000, True, always(None), False, "no working C++ compiler was found"),
    ],
)
def test_compile_auto_compiles_when_the_cache_is_warm_or_the_run_pays(
    setting, steps, warm, compiler, compiles, why
):
    decided, reason = decide(setting, max_steps=steps, warm=warm, find_compiler=compiler, cuda=False)
    assert decided is compiles and why in reason


def test_compile_true_without_a_compiler_and_unknown_values_are_refused_naming_the_fix():
    with pytest.raises(ValueError, match="compile=true needs a working C\\+\\+ compiler.*set compile=auto"):
        decide(True, max_steps=10, warm=False, find_compiler=always(None), cuda=False)
    with pytest.raises(ValueError, match="working C compiler.*cc, gcc, clang"):
        decide(True, max_steps=10, warm=False, find_compiler=always(None), cuda=True)
    with pytest.raises(ValueError, match="compile must be true, false or auto, got 'yes'; set compile=auto"):
        decide("yes", max_steps=10, warm=False, find_compiler=never_asked, cuda=False)


def test_a_compiler_that_cannot_build_is_no_compiler(monkeypatch, tmp_path):
    working_compiler.cache_clear()
    monkeypatch.setenv("CXX", "false")  # found on PATH, but fails every build
    assert working_compiler(False) is None
    working_compiler.cache_clear()
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    assert working_compiler(False) is None
    working_compiler.cache_clear()
    if shutil.which("g++"):
        monkeypatch.delenv("CXX")
        assert working_compiler(False) == shutil.which("g++")
    working_compiler.cache_clear()


def test_the_cache_folder_is_the_configs_then_pytorchs_variable_then_the_users_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(compiler, "_users_cache_dir", compiler._UNSET)  # as in a fresh process
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "torch"))
    assert cache_dir(str(tmp_path / "mine")) == tmp_path / "mine"
    assert cache_dir(None) == tmp_path / "torch"
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir(None) == tmp_path / "xdg" / "nanogpt" / "torch-compile"
    # a run's own compile_cache_dir points PyTorch there, but is not the next run's default
    compiler.use_cache_dir(tmp_path / "one-run")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "one-run")
    assert cache_dir(None) == tmp_path / "xdg" / "nanogpt" / "torch-compile"


def test_a_fast_dev_run_counts_as_the_batches_it_runs():
    # debug=fdr on a 5,000-step recipe runs one step: compile=auto must not pay a compile for it
    trainer = OmegaConf.create({"max_steps": 5000, "fast_dev_run": True})
    assert compiler.planned_steps(trainer) == 1
    assert compiler.planned_steps(OmegaConf.merge(trainer, {"fast_dev_run": 3})) == 3
    assert compiler.planned_steps(OmegaConf.merge(trainer, {"fast_dev_run": False})) == 5000


def test_a_compiled_step_is_known_by_its_shape_batch_and_precision():
    cfg = compose_train(TINY)
    model = GPTConfig(n_layer=1, n_head=1, n_embd=32, vocab_size=65)
    marker = step_marker(cfg, model)
    assert marker == step_marker(cfg, dataclasses.replace(model))
    assert marker != step_marker(cfg, dataclasses.replace(model, n_layer=2))
    for key, value in (("data.batch_size", 3), ("trainer.precision", "bf16-mixed")):
        other = cfg.copy()
        OmegaConf.update(other, key, value)
        assert marker != step_marker(other, model)


@pytest.mark.nightly  # a cold compile of the tiny model takes 20-60 s on 2 cores
def test_a_compiled_run_warms_the_cache_for_the_next_and_its_checkpoint_loads_uncompiled(
    cfg_tiny, tmp_path, caplog
):
    if working_compiler(False) is None:
        pytest.skip("torch.compile on the CPU builds C++ kernels, and there is no working C++ compiler")
    with open_dict(cfg_tiny):
        cfg_tiny.compile = True
        cfg_tiny.compile_cache_dir = str(tmp_path / "cache")
        cfg_tiny.trainer.max_steps = 6
        cfg_tiny.callbacks.bleu = None
    with caplog.at_level(logging.INFO, logger="nanogpt"):
        first = train(cfg_tiny)
    assert "compiled the training step in" in caplog.text and "cold cache" in caplog.text
    (marker,) = (tmp_path / "cache" / "nanogpt-steps").glob("*.json")
    assert json.loads(marker.read_text())["first_step_s"] > 0
    # PyTorch's caches go there too (unless this process had compiled the same step already, which
    # Dynamo then reuses without compiling)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cache")
    run = Path(cfg_tiny.paths.output_dir)
    # the checkpoint is the plain model's: it loads into an uncompiled GPT on its own
    model, _, _ = load_checkpoint(run, device="cpu")
    assert not any("_orig_mod" in k for k in torch.load(run / "checkpoints" / "last.ckpt")["state_dict"])
    assert model.config.n_layer == cfg_tiny.model.n_layer

    # the next run of the same step on this machine: auto compiles, from the cache
    caplog.clear()
    with open_dict(cfg_tiny):
        cfg_tiny.compile = "auto"
        cfg_tiny.paths.output_dir = str(tmp_path / "second")
    with caplog.at_level(logging.INFO, logger="nanogpt"):
        second = train(cfg_tiny)
    assert "compiling, with this training step's kernels in the cache" in caplog.text
    assert "warm cache" in caplog.text
    assert OmegaConf.load(tmp_path / "second" / "config.yaml").compile is True
    # the same training, compiled both times
    assert second["best_val_loss"] == pytest.approx(first["best_val_loss"], rel=1e-5)
