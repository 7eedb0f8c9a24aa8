"""What only a GPU can show: bf16-mixed, fused AdamW, TF32, torch.compile and the GPU recipe.

Every test is marked ``gpu`` and skips itself without CUDA (tests/conftest.py). Run them with
``pytest -m gpu`` on a machine with a GPU.
"""

import copy
import csv
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from nanogpt.runs.checkpoint import load_checkpoint
from nanogpt.training.job import train

from .helpers import TINY, compose_train

pytestmark = pytest.mark.gpu


@pytest.fixture
def cfg_gpu(text_path, tmp_path):
    """The tiny recipe on one GPU with trainer=gpu (bf16-mixed)."""
    cfg = compose_train([*TINY, "trainer=gpu", "trainer.devices=1", "callbacks.bleu=null"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.data.data_dir = str(tmp_path / "data")
        cfg.data.path = str(text_path)
    return cfg


def losses(run: Path) -> list[float]:
    with open(run / "csv" / "metrics.csv") as f:
        return [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]


def test_bf16_mixed_training_on_one_gpu_lowers_the_loss_with_fused_adamw_and_tf32(cfg_gpu):
    assert cfg_gpu.trainer.precision == "bf16-mixed"
    metrics = train(cfg_gpu)
    run = Path(cfg_gpu.paths.output_dir)
    loss = losses(run)
    assert loss[-1] < loss[0] - 0.3
    assert metrics["best_val_loss"] < 3.5
    assert torch.get_float32_matmul_precision() == "high"  # matmul_precision=auto on CUDA
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    groups = ckpt["optimizer_states"][0]["param_groups"]
    assert all(g.get("fused") for g in groups)  # PyTorch's fused AdamW kernel


def test_the_gpu_run_logs_mfu_against_lightnings_table(cfg_gpu):
    train(cfg_gpu)
    run = Path(cfg_gpu.paths.output_dir)
    with open(run / "csv" / "metrics.csv") as f:
        mfu = [float(r["perf/mfu"]) for r in csv.DictReader(f) if r.get("perf/mfu")]
    if not mfu:
        pytest.skip(f"{torch.cuda.get_device_name()} is not in Lightning's table of peak FLOP/s")
    assert all(0 < m < 1 for m in mfu)


def test_a_compiled_run_trains_and_its_checkpoint_loads_uncompiled(cfg_gpu):
    cfg = copy.deepcopy(cfg_gpu)
    with open_dict(cfg):
        cfg.compile = True
    train(cfg)
    run = Path(cfg.paths.output_dir)
    loss = losses(run)
    assert loss[-1] < loss[0] - 0.3
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert not any("_orig_mod" in k for k in ckpt["state_dict"])  # the plain model's keys
    model, _, _ = load_checkpoint(run, device="cpu")  # an uncompiled GPT on the CPU
    x = torch.zeros(1, 8, dtype=torch.long)  # (B, T)
    assert model(x)[0].shape[:2] == (1, 8)


def test_the_gpu_recipe_trains_200_steps_on_one_gpu(shakespeare_path, tmp_path):
    cfg = compose_train(["experiment=shakespeare_char", "trainer.max_steps=200", "trainer.devices=1"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.data.data_dir = str(tmp_path / "data")
        cfg.data.path = str(shakespeare_path)
        cfg.callbacks.bleu = None
    metrics = train(cfg)
    assert metrics["step"] == 200
    # nanoGPT's recipe is near 2.5 (the unigram entropy of the characters) by step 200
    assert metrics["best_val_loss"] < 2.6
