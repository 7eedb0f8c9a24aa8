"""Shared fixtures: a fixture text, and a train config composed once and copied per test (the plain
helpers they use are in ``helpers.py``)."""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path

import pytest
from omegaconf import DictConfig, open_dict

from .helpers import TINY, compose_train, make_text


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
        # an empty compile cache: compile=auto trains these short runs eagerly, whatever ran before
        cfg.compile_cache_dir = str(tmp_path / "compile-cache")
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


def pytest_configure(config: pytest.Config) -> None:
    # torch.compile's kernels from tests go to a folder of their own, kept between sessions (a cold
    # compile of even the tiny model takes half a minute), never the user's ~/.cache/nanogpt
    os.environ.setdefault(
        "TORCHINDUCTOR_CACHE_DIR", os.path.join(tempfile.gettempdir(), "nanogpt-tests-torch-compile")
    )
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # one thread per pytest-xdist worker, and per process its tests start: the workers already keep
        # the cores busy, and two threads each would make them wait on each other
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``slow`` tests run with NANOGPT_RUN_SLOW=1 (as in CI) or ``-m slow``; ``gpu`` tests need CUDA."""
    import torch

    run_slow = os.environ.get("NANOGPT_RUN_SLOW") == "1" or "slow" in (config.getoption("-m") or "")
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow: set NANOGPT_RUN_SLOW=1 or pass -m slow"))
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))
