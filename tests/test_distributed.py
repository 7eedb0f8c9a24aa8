"""Two processes on this machine's CPU: one DDP run, FSDP checked against it, torchrun on two "nodes".

Every multi-process run is a subprocess of ``nanogpt-train``, since Lightning's ddp launcher re-runs
the command for its other ranks. One 2-rank DDP run (``ddp_run``) serves every check that reads a DDP
run: one folder for both ranks, the global batch, each rank's own windows, one W&B run, and the
numbers FSDP must reproduce. trainer=fsdp is Lightning's FSDPStrategy, each Block its own unit, with
one-file checkpoints; the 2-process FSDP runs use :class:`~tests.fsdp_on_cpu.FSDPOnCPU` (its docstring
says why Lightning's own strategy cannot run on a CPU) and train the DDP run's model on the same
batches, so sharding must not change the numbers.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.strategies import FSDPStrategy
from omegaconf import OmegaConf, open_dict
from torch.distributed.fsdp import ShardingStrategy
from torch.distributed.fsdp.wrap import ModuleWrapPolicy

from nanogpt.data import CorpusConfig, find_corpus
from nanogpt.data.windows import EvalWindows
from nanogpt.evaluate import val_loss
from nanogpt.model import GPT, Block, GPTConfig
from nanogpt.runs.checkpoint import load_checkpoint
from nanogpt.sample import sample
from nanogpt.training.callbacks.checkpoints import AtomicCheckpointIO
from nanogpt.training.job import instantiate as train_instantiate

from .fsdp_on_cpu import FSDPOnCPU
from .helpers import (
    TINY,
    column,
    compose_train,
    free_port,
    isolate_wandb,
    read_metrics,
    read_offline_run,
    run_cli,
)
from .helpers.callbacks import PROBE, ROOT, read_ranks

ON_CPU = [
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "trainer.precision=32-true",  # bf16 on a CPU is emulated, and DDP is compared in float32
    "trainer.max_steps=10",
    "trainer.val_check_interval=5",
    # batch 8 x context 32 x 2 processes is 512 tokens: 1024 per step is 2 micro-batches per rank
    "data.global_batch_tokens=1024",
    "callbacks.bleu=null",
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
def ddp_run(tmp_path_factory, text_path) -> Path:
    """A 10-step run on two CPU ranks under Lightning's ddp launcher, 2 micro-batches per rank and step,
    logging to CSV, TensorBoard and W&B (offline), every rank writing down what it trained with."""
    cwd = tmp_path_factory.mktemp("ddp")
    with pytest.MonkeyPatch.context() as monkeypatch:
        isolate_wandb(monkeypatch, cwd / "wandb-env")
        monkeypatch.setenv("WANDB_MODE", "offline")
        args = ["trainer=ddp_cpu", *ON_CPU, f"data.path={text_path}", "logger=[csv,wandb]", *PROBE]
        return train_cli(cwd, args, "ddp")  # in the environment isolate_wandb made


def test_two_process_ddp_writes_one_run_folder_and_gives_each_rank_its_windows(ddp_run, monkeypatch):
    run = ddp_run
    assert [p.name for p in run.parent.iterdir()] == [run.name]  # one run folder for both ranks
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
    assert len(list(run.rglob("result.json"))) == 1
    record = json.loads((run / "result.json").read_text())
    assert record["status"] == "completed" and record["step"] == 10
    # the final validation: rank 0 alone scores best.ckpt on the whole val split, as nanogpt-eval does
    model, _, _ = load_checkpoint(run / "checkpoints" / "best.ckpt")
    monkeypatch.chdir(run.parents[2])  # config.yaml's data_dir is under paths.root_dir=.
    corpus = find_corpus(CorpusConfig.from_data(OmegaConf.load(run / "config.yaml").data))
    loss, tokens = val_loss(model, EvalWindows(corpus.path("val"), 32, 8, None, dtype=corpus.meta.dtype))
    assert (record["final_val_loss"], record["final_val_tokens"]) == (pytest.approx(loss, rel=1e-6), tokens)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 10
    rows = read_metrics(run)
    loss = column(rows, "train/loss")
    assert len(loss) == 10 and loss[-1][1] < loss[0][1] - 0.2  # it learns
    assert column(rows, "perf/tokens_per_s") and column(rows, "perf/step_ms")
    assert not column(rows, "perf/mfu")  # no peak is known for a CPU
    ranks = read_ranks(run)
    assert [r["rank"] for r in ranks] == [0, 1] and len({r["pid"] for r in ranks}) == 2
    assert {r["accumulate_grad_batches"] for r in ranks} == {2}
    assert len(ranks[0]["batches"]) == len(ranks[1]["batches"]) == 20  # 10 steps x 2 micro-batches
    assert not set(ranks[0]["batches"]) & set(ranks[1]["batches"])  # each rank its own windows
    assert ranks[0]["val_loss"] == ranks[1]["val_loss"] and len(ranks[0]["val_loss"]) == 2
    log = (run / "train.log").read_text()
    assert "accumulation 2 (from data.global_batch_tokens) x devices 2" in log
    assert "accumulation 2 = 1,024 / (batch 8 x context 32 x 2 processes)" in log


def test_two_process_ddp_makes_one_wandb_run(ddp_run):
    # Lightning's ddp launcher re-runs the command for rank 1, which must not start a second run
    (run_dir,) = ddp_run.glob("wandb/offline-run-*")
    got = read_offline_run(run_dir)
    val_loss = [(r["trainer/global_step"], r["val/loss"]) for r in got["history"] if "val/loss" in r]
    assert [step for step, _ in val_loss] == [5, 10]
    assert got["summary"]["val/loss"] == {"min": min(v for _, v in val_loss)}


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory, text_path) -> tuple[Path, Path]:
    """The DDP run's 10 steps under FSDP on two CPU ranks, in two parts: 5 steps (on the 10-step
    schedule), then resumed from that run's folder for the other 5."""
    cwd = tmp_path_factory.mktemp("fsdp")
    args = [*FSDP_ON_CPU, f"data.path={text_path}"]
    first = train_cli(cwd, [*args, "trainer.max_steps=5", "scheduler.decay_steps=10"], "fsdp")
    resumed = train_cli(cwd, [*args, f"ckpt_path={first}"], "fsdp_resumed")
    return first, resumed


@pytest.mark.slow  # two 2-rank FSDP runs, ~30 s on 2 cores
def test_fsdp_on_two_cpu_ranks_trains_and_resumes_like_ddp(fsdp_run, ddp_run):
    first, resumed = fsdp_run
    for run in fsdp_run:
        assert {p.name for p in (run / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
    assert [s for s, _ in column(read_metrics(resumed), "train/loss")] == list(range(6, 11))  # from step 5 on
    # the same losses and gradient norms (FSDP combines the ranks' shards) as unsharded training
    for key in ("train/loss", "train/grad_norm", "val/loss"):
        sharded_points = column(read_metrics(first), key) + column(read_metrics(resumed), key)
        plain_points = column(read_metrics(ddp_run), key)
        assert [s for s, _ in sharded_points] == [s for s, _ in plain_points], key
        assert [v for _, v in sharded_points] == pytest.approx([v for _, v in plain_points], abs=1e-4), key

    sharded, plain = (torch.load(r / "checkpoints/last.ckpt", weights_only=True) for r in (resumed, ddp_run))
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


@pytest.mark.slow  # reads the two FSDP runs
def test_fsdp_checkpoint_samples_on_one_cpu_as_the_ddp_one(fsdp_run, ddp_run):
    _, fsdp = fsdp_run
    model, tokenizer, _ = load_checkpoint(fsdp, device="cpu")
    assert isinstance(model, GPT) and model.lm_head.weight is model.transformer.wte.weight
    texts = []
    for run in (fsdp, ddp_run):
        cfg = compose_sample(
            [f"ckpt_path={run}", "prompt=ROMEO:", "num_samples=1", "max_new_tokens=30", "device=cpu"]
        )
        (text,) = sample(cfg, out=io.StringIO())
        texts.append(text)
    assert texts[0].startswith("ROMEO:") and len(texts[0]) == len("ROMEO:") + 30
    assert texts[0] == texts[1]  # the same weights, so the same seeded sample


def compose_sample(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from nanogpt import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="sample", overrides=overrides)


@pytest.mark.slow  # four processes: two torchrun agents, two ranks
def test_torchrun_on_two_nodes_of_this_machine_writes_one_run_folder(tmp_path, text_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    launch = [str(torchrun), "--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d"]
    launch += [f"--rdzv-endpoint=127.0.0.1:{free_port()}", "--rdzv-id=nanogpt-test"]
    args = [*TINY, "trainer=ddp_cpu", "trainer.devices=1", "trainer.num_nodes=2", "trainer.max_steps=10"]
    args += ["trainer.val_check_interval=5", f"data.path={text_path}", "name=torchrun", "paths.root_dir=."]
    args += ["callbacks.bleu=null", *PROBE]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": ROOT}
    nodes = [
        subprocess.Popen(
            [*launch, "-m", "nanogpt.cli.train", *args],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    (run,) = (tmp_path / "runs" / "torchrun").iterdir()  # the ranks agreed on rank 0's folder
    assert [r["rank"] for r in read_ranks(run)] == [0, 1]
    assert {r["world_size"] for r in read_ranks(run)} == {2}
    record = json.loads((run / "result.json").read_text())
    assert record["status"] == "completed" and record["step"] == 10
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}


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
