"""trainer=fsdp: Lightning's FSDPStrategy, each Block its own unit, one-file checkpoints.

The 2-process runs use :class:`~tests.fsdp_on_cpu.FSDPOnCPU` (its docstring says why Lightning's own
strategy cannot run on a CPU) and are checked against DDP, which trains the same model on the same
batches: sharding must not change the numbers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.strategies import FSDPStrategy
from omegaconf import open_dict
from torch.distributed.fsdp import ShardingStrategy
from torch.distributed.fsdp.wrap import ModuleWrapPolicy

from nanogpt.model import GPT, Block, GPTConfig
from nanogpt.runs.checkpoint import load_checkpoint
from nanogpt.training.callbacks.checkpoints import AtomicCheckpointIO
from nanogpt.training.job import instantiate as train_instantiate

from .fsdp_on_cpu import FSDPOnCPU
from .helpers import TINY, column, compose_train, read_metrics, run_cli

ROOT = str(Path(__file__).resolve().parents[1])  # on PYTHONPATH, so the ranks import tests.fsdp_on_cpu
ON_CPU = [
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "trainer.precision=32-true",  # bf16 on a CPU is emulated, and DDP is compared in float32
    "trainer.max_steps=10",
    "trainer.val_check_interval=5",
]
FSDP_ON_CPU = ["trainer=fsdp", *ON_CPU, f"trainer.strategy._target_={FSDPOnCPU.__module__}.FSDPOnCPU"]


def wraps(policy, module: torch.nn.Module) -> bool:
    """Whether an FSDP wrap policy makes ``module`` its own unit (torch's public policy call)."""
    return policy(module=module, recurse=False, nonwrapped_numel=0)


def test_fsdp_trainer_shards_each_block_with_lightnings_strategy():
    cfg = compose_train(["trainer=fsdp"])
    assert (cfg.trainer.accelerator, cfg.trainer.devices, cfg.trainer.precision) == ("gpu", -1, "bf16-mixed")
    strategy = instantiate(cfg.trainer.strategy)
    assert type(strategy) is FSDPStrategy
    assert strategy.sharding_strategy == ShardingStrategy.FULL_SHARD
    policy = strategy.kwargs["auto_wrap_policy"]
    config = GPTConfig(n_layer=1, n_head=2, n_embd=8, block_size=8, vocab_size=16)
    assert isinstance(policy, ModuleWrapPolicy) and wraps(policy, Block(config))
    assert not wraps(policy, GPT(config)) and not wraps(policy, torch.nn.LayerNorm(8))
    assert strategy.kwargs["use_orig_params"] is True  # GPT.param_groups sees the model's own parameters
    # one .ckpt file, as nanogpt-sample reads; no activation checkpointing unless asked for
    assert cfg.trainer.strategy.state_dict_type == "full"
    assert cfg.trainer.strategy.activation_checkpointing_policy is None


def test_activation_checkpointing_takes_the_wrap_policy():
    # the override that configs/trainer/fsdp.yaml gives
    policy = "${trainer.strategy.auto_wrap_policy}"
    cfg = compose_train(["trainer=fsdp", f"trainer.strategy.activation_checkpointing_policy={policy}"])
    checkpointed = instantiate(cfg.trainer.strategy.activation_checkpointing_policy)
    config = GPTConfig(n_layer=1, n_head=2, n_embd=8, block_size=8, vocab_size=16)
    assert wraps(checkpointed, Block(config)) and not wraps(checkpointed, GPT(config))
    assert isinstance(instantiate(cfg.trainer.strategy), FSDPStrategy)


def test_lightning_refuses_fsdp_on_cpu_but_the_test_strategy_keeps_the_atomic_checkpoints(tmp_path):
    # Why the CPU runs below need FSDPOnCPU. If this starts failing, Lightning allows FSDP on a CPU and
    # the tests can use configs/trainer/fsdp.yaml as it is.
    cfg = compose_train(["trainer=fsdp", *ON_CPU])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
    with pytest.raises(ValueError, match="The strategy `fsdp` requires a GPU accelerator"):
        train_instantiate(cfg.trainer, logger=False)  # as nanogpt-train reports it
    cfg.trainer.strategy._target_ = f"{FSDPOnCPU.__module__}.FSDPOnCPU"
    trainer = instantiate(cfg.trainer, logger=False)
    assert isinstance(trainer.strategy, FSDPStrategy)
    # trainer/default.yaml's plugin writes the full checkpoint that rank 0 gathers
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


@pytest.mark.parametrize(
    ("name", "shape", "millions"),
    [
        ("gpt2", (12, 12, 768), 124),
        ("gpt2_medium", (24, 16, 1024), 355),
        ("gpt2_large", (36, 20, 1280), 774),
        ("gpt2_xl", (48, 25, 1600), 1558),
    ],
)
def test_gpt2_model_configs_have_openais_shapes(name, shape, millions):
    model = compose_train([f"model={name}"]).model
    assert (model.n_layer, model.n_head, model.n_embd) == shape
    assert (model.block_size, model.vocab_size, model.bias, model.tie_weights) == (1024, 50304, True, True)
    with torch.device("meta"):  # the shapes without the memory
        gpt = GPT(GPTConfig(**{k: v for k, v in model.items() if k != "init_from"}))
    assert round(sum(p.numel() for p in gpt.parameters()) / 1e6) == millions


def train_cli(cwd: Path, args: list[str], name: str) -> Path:
    result = run_cli(
        "nanogpt-train", [*TINY, *args, f"name={name}", "paths.root_dir=."], cwd=cwd, env={"PYTHONPATH": ROOT}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (cwd / "runs" / name).iterdir()
    return run


@pytest.fixture(scope="module")
def fsdp_and_ddp(tmp_path_factory, text_path) -> tuple[Path, Path]:
    """A 10-step FSDP run on two CPU ranks, and the same run under DDP."""
    cwd = tmp_path_factory.mktemp("fsdp")
    fsdp = train_cli(cwd, [*FSDP_ON_CPU, f"data.path={text_path}"], "fsdp")
    ddp = train_cli(cwd, ["trainer=ddp_cpu", *ON_CPU, f"data.path={text_path}"], "ddp")
    return fsdp, ddp


def test_fsdp_on_two_cpu_ranks_trains_like_ddp(fsdp_and_ddp):
    fsdp, ddp = fsdp_and_ddp
    assert {p.name for p in (fsdp / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
    loss = column(read_metrics(fsdp), "train/loss")
    assert len(loss) == 10 and loss[-1][1] < loss[0][1] - 0.2
    # the same losses and gradient norms (FSDP combines the ranks' shards) as unsharded training
    for key in ("train/loss", "train/grad_norm", "val/loss"):
        (steps, sharded), (ddp_steps, plain) = (
            zip(*column(read_metrics(r), key), strict=True) for r in (fsdp, ddp)
        )
        assert steps == ddp_steps and sharded == pytest.approx(plain, abs=1e-4), key

    sharded, plain = (torch.load(r / "checkpoints/last.ckpt", weights_only=True) for r in (fsdp, ddp))
    assert sharded["global_step"] == 10
    # one file holding the whole model, under the same names as a single-device checkpoint
    assert sharded["state_dict"].keys() == plain["state_dict"].keys()
    for key, value in plain["state_dict"].items():
        assert sharded["state_dict"][key].shape == value.shape, key
        torch.testing.assert_close(sharded["state_dict"][key], value, atol=1e-5, rtol=1e-4)
    # weight decay still reaches the matrices and embeddings: FSDP has flattened every parameter to
    # 1-d by the time the optimizer is built
    groups = [len(g["params"]) for g in sharded["optimizer_states"][0]["param_groups"]]
    assert groups == [len(g["params"]) for g in plain["optimizer_states"][0]["param_groups"]]
    assert groups[0] == 10  # 4 matrices in each of 2 blocks, the tied embedding, the positions


def test_fsdp_resumes_from_its_run_folder(fsdp_and_ddp, text_path, tmp_path):
    fsdp, _ = fsdp_and_ddp
    args = [*FSDP_ON_CPU, f"data.path={text_path}", "trainer.max_steps=15", f"ckpt_path={fsdp}"]
    resumed = train_cli(tmp_path, args, "fsdp_resumed")
    assert torch.load(resumed / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 15
    steps = [s for s, _ in column(read_metrics(resumed), "train/loss")]
    assert steps == list(range(11, 16))  # it continued from step 10, not from scratch


def test_fsdp_checkpoint_samples_on_one_cpu_as_the_ddp_one(fsdp_and_ddp, tmp_path):
    fsdp, ddp = fsdp_and_ddp
    model, tokenizer, _ = load_checkpoint(fsdp, device="cpu")
    assert isinstance(model, GPT) and model.lm_head.weight is model.transformer.wte.weight
    texts = []
    for run in (fsdp, ddp):
        args = [f"ckpt_path={run}", "prompt=ROMEO:", "num_samples=1", "max_new_tokens=30", "device=cpu"]
        result = run_cli("nanogpt-sample", args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        texts.append(result.stdout)
    assert texts[0].startswith("ROMEO:") and len(texts[0]) == len("ROMEO:") + 30 + 1
    assert texts[0] == texts[1]  # the same weights, so the same seeded sample


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="FSDP shards across 2 or more CUDA devices")
def test_fsdp_on_gpus_trains_resumes_and_samples_on_one_device(tmp_path, text_path):
    # configs/trainer/fsdp.yaml as it is: Lightning's own strategy, bf16-mixed, every GPU
    args = ["trainer=fsdp", "trainer.max_steps=10", "trainer.val_check_interval=5", f"data.path={text_path}"]
    run = train_cli(tmp_path, args, "fsdp")
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
    loss = column(read_metrics(run), "train/loss")
    assert loss[-1][1] < loss[0][1] - 0.2
    resumed = train_cli(tmp_path, [*args, "trainer.max_steps=20", f"ckpt_path={run}"], "fsdp_resumed")
    assert torch.load(resumed / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 20
    result = run_cli("nanogpt-sample", [f"ckpt_path={run}", "max_new_tokens=30", "device=cpu"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
