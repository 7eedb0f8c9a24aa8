"""Shared fixtures: a fixture text, and a train config composed once and copied per test."""

from __future__ import annotations

import copy
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from nanogpt import CONFIG_DIR

LINES = [
    "First Citizen: Before we proceed any further, hear me speak.",
    "All: Speak, speak.",
    "First Citizen: You are all resolved rather to die than to famish?",
    "All: Resolved. resolved.",
    "Second Citizen: Would you proceed especially against Caius Marcius?",
    "MENENIUS: What work's, my countrymen, in hand? where go you",
    "With bats and clubs? the matter? speak, I pray you.",
    "ROMEO: But, soft! what light through yonder window breaks?",
    "JULIET: O Romeo, Romeo! wherefore art thou Romeo?",
]


def make_text(n_lines: int = 600, seed: int = 0) -> str:
    """A small learnable corpus: fixed lines in a seeded random order."""
    rng = random.Random(seed)
    return "\n".join(rng.choice(LINES) for _ in range(n_lines)) + "\n"


@pytest.fixture(scope="session")
def text_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "input.txt"
    path.write_text(make_text())
    return path


@pytest.fixture(scope="session")
def shakespeare_path() -> Path:
    """The real Tiny Shakespeare text, when NANOGPT_SHAKESPEARE_PATH points at it (as in CI)."""
    value = os.environ.get("NANOGPT_SHAKESPEARE_PATH")
    if not value or not Path(value).is_file():
        pytest.skip("set NANOGPT_SHAKESPEARE_PATH=/path/to/tinyshakespeare/input.txt")
    return Path(value)


def compose_train(overrides: list[str] | None = None) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides or [])


def run_cli(
    name: str, args: list[str], cwd: Path, timeout: int = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run one of the package's console scripts (``nanogpt-train``, ...) as a user would."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    exe = Path(sys.executable).with_name(name)
    return subprocess.run(
        [str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


TINY = [
    "model=gpt_tiny",
    "trainer=cpu",
    "trainer.max_steps=40",
    "trainer.val_check_interval=20",
    "trainer.log_every_n_steps=1",
    "data.batch_size=8",
    "data.eval_batches=2",
    "scheduler.warmup_steps=5",
    "optimizer.lr=3e-3",
]


# what configs/hparams_search/shakespeare_optuna.yaml searches over
SEARCHED_KEYS = {
    "optimizer.lr",
    "scheduler.warmup_steps",
    "optimizer.weight_decay",
    "model.dropout",
    "model.n_embd",
    "model.n_layer",
}


@pytest.fixture(scope="session")
def cfg_tiny_global() -> DictConfig:
    return compose_train(TINY)


@pytest.fixture
def cfg_tiny(cfg_tiny_global: DictConfig, text_path: Path, tmp_path: Path) -> DictConfig:
    """A tiny CPU run on the fixture text, writing into this test's own folder."""
    cfg = copy.deepcopy(cfg_tiny_global)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.data.data_dir = str(tmp_path / "data")
        cfg.data.path = str(text_path)
    return cfg


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random Hugging Face GPT-2 (GPT-2's vocabulary, 2 layers, 32 wide, context 64), as
    ``save_pretrained`` writes it: what ``model.init_from=<folder>`` reads, without any download."""
    transformers = pytest.importorskip("transformers")
    import torch

    # weights 5x GPT-2's init (0.02), so its activations are large enough that the exact GELU would
    # move the logits by ~3e-4 relative, which parity tests at 1e-4 then see (0.02: ~4e-6)
    config = transformers.GPT2Config(
        n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=50257, initializer_range=0.1
    )
    with torch.random.fork_rng():  # leave the tests' global RNG as it was
        torch.manual_seed(0)
        model = transformers.GPT2LMHeadModel(config)
    path = tmp_path_factory.mktemp("tiny_gpt2")
    model.save_pretrained(path)
    return path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``slow`` tests run with NANOGPT_RUN_SLOW=1 (as in CI) or ``-m slow``; ``gpu`` tests need CUDA."""
    import torch

    run_slow = os.environ.get("NANOGPT_RUN_SLOW") == "1" or "slow" in (config.getoption("-m") or "")
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow: set NANOGPT_RUN_SLOW=1 or pass -m slow"))
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))
