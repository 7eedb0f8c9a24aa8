"""Shared fixtures: a fixture text, a train config composed once and copied per test, and one tiny
trained run that many tests read (the plain helpers they use are in ``helpers/``). The markers:
``slow`` and ``nightly`` tests run only when asked (README, "Tests"); ``gpu`` tests need CUDA."""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from omegaconf import DictConfig, open_dict

from .helpers import TINY, compose_train, isolate_wandb, make_text


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


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """A finished run that tests only read: its folder, the config it trained with, what ``train``
    returned, what it logged (``nanogpt``'s INFO records, as ``train.log`` holds them under
    ``nanogpt-train``), and the ``$HOME`` W&B saw (which must stay empty)."""

    path: Path
    cfg: DictConfig
    metrics: dict
    log: str
    wandb_home: Path


# the shared run: the tiny recipe, validated every 10 steps, BLEU on 4 prompts at every second
# validation (steps 10 and 30), every logger (CSV, TensorBoard, and W&B offline with the best checkpoint
# as an artifact), MFU against a made-up peak (CPUs have none in Lightning's table)
TRAINED_RUN = [
    *TINY,
    "name=tiny",
    "trainer.val_check_interval=10",
    "logger=many",
    "callbacks.bleu.num_prompts=4",
    "callbacks.bleu.prompt_tokens=16",
    "callbacks.bleu.continuation_tokens=24",
    "callbacks.bleu.every_n_evals=2",
    "callbacks.throughput.peak_flops=1e12",
    "compile=false",
]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, text_path: Path) -> TrainedRun:
    """One tiny run, trained once per test process, for every test that only reads a finished run
    (its checkpoints, metrics, loggers, curves, samples). A test that writes copies it first."""
    from nanogpt.training.job import train

    root = tmp_path_factory.mktemp("trained")
    (root / "data").mkdir()
    (root / "data" / "input.txt").write_text(text_path.read_text())  # data.path=null reads it there
    cfg = compose_train(TRAINED_RUN)
    with open_dict(cfg):
        cfg.logger.wandb = compose_train(["logger=wandb"]).logger.wandb
        cfg.logger.wandb.offline = True
        cfg.logger.wandb.log_model = True
        cfg.paths.output_dir = str(root / "run")
        cfg.data.data_dir = str(root / "data")
        cfg.data.path = None
        cfg.compile_cache_dir = str(root / "compile-cache")
    records: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger("nanogpt")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            home = isolate_wandb(monkeypatch, root)
            metrics = train(cfg)
            import wandb

            wandb.teardown()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return TrainedRun(root / "run", cfg, metrics, "\n".join(records), home)


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


_COMPILE_CACHE: str | None = None  # the session's compile cache, where this process made it


def pytest_configure(config: pytest.Config) -> None:
    global _COMPILE_CACHE
    # torch.compile's kernels from tests go to an empty folder of this session's (the pytest-xdist
    # workers inherit it), never the user's ~/.cache/nanogpt: with a warm cache, compile=auto would
    # compile the short runs of tests that never asked for it, and their time would depend on what ran before
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        _COMPILE_CACHE = tempfile.mkdtemp(prefix="nanogpt-tests-compile-")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = _COMPILE_CACHE
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # one thread per pytest-xdist worker, and per process its tests start: the workers already keep
        # the cores busy, and two threads each would make them wait on each other
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _COMPILE_CACHE:
        shutil.rmtree(_COMPILE_CACHE, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``slow`` tests run with NANOGPT_RUN_SLOW=1 (as in CI) or ``-m slow``; ``nightly`` tests (what CI
    leaves out) with NANOGPT_RUN_NIGHTLY=1 or ``-m nightly``; ``gpu`` tests need CUDA."""
    import torch

    chosen = config.getoption("-m") or ""

    def asked_for(marker: str) -> bool:
        return os.environ.get(f"NANOGPT_RUN_{marker.upper()}") == "1" or bool(
            re.search(rf"(?<!not )\b{marker}\b", chosen)
        )

    run_slow, run_nightly = asked_for("slow"), asked_for("nightly")
    for item in items:
        if "nightly" in item.keywords and not run_nightly:
            item.add_marker(pytest.mark.skip(reason="nightly: set NANOGPT_RUN_NIGHTLY=1 or pass -m nightly"))
        elif "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow: set NANOGPT_RUN_SLOW=1 or pass -m slow"))
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))
