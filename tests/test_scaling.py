"""From one process to several: the global batch, launches that disagree with the config, SLURM
folders, and throughput. (The multi-process runs themselves, DDP, FSDP and torchrun: test_distributed.py.)"""

import csv
import json
import os
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import open_dict
from torch.utils.data import DataLoader

from nanogpt.metrics.flops import flops_per_token
from nanogpt.model import GPTConfig, ParamGroups
from nanogpt.runs.folder import Result, RunDir, claim, requeue_checkpoint
from nanogpt.runs.names import run_name
from nanogpt.training.job import train
from nanogpt.training.module import GPTLightningModule
from nanogpt.training.spec import accumulation_for, derived_accumulation, matmul_precision

from .helpers import TINY, column, compose_train, free_port, read_metrics

# --- the global batch ---


def test_global_batch_tokens_gives_the_accumulation_or_names_the_nearest_valid_values():
    assert accumulation_for(524_288, batch_size=16, block_size=1024, processes=8) == 4  # GPT-2's 0.5M
    assert accumulation_for(524_288, batch_size=16, block_size=1024, processes=1) == 32
    with pytest.raises(
        ValueError, match=r"one micro-batch on every process is 131,072 tokens \(data.batch_size 16"
    ):
        accumulation_for(500_000, batch_size=16, block_size=1024, processes=8)
    with pytest.raises(ValueError, match=r"nearest valid values are 393,216 \(accumulation 3\) and 524,288"):
        accumulation_for(500_000, batch_size=16, block_size=1024, processes=8)
    with pytest.raises(ValueError, match=r"nearest valid values are 131,072 \(accumulation 1\); or"):
        accumulation_for(1000, batch_size=16, block_size=1024, processes=8)  # below one micro-batch
    with pytest.raises(ValueError, match="data.global_batch_tokens must be a positive integer"):
        accumulation_for(0, batch_size=16, block_size=1024, processes=8)


@pytest.mark.parametrize(("trainer", "processes"), [("cpu", 1), ("ddp_cpu", 2)])
def test_global_batch_tokens_keeps_the_tokens_per_step_on_any_number_of_processes(trainer, processes):
    cfg = compose_train([*TINY, f"trainer={trainer}", "data.global_batch_tokens=2048"])
    accumulation = derived_accumulation(cfg)
    assert accumulation == 8 // processes  # batch 8 x context 32 = 256 tokens per micro-batch
    assert cfg.data.batch_size * cfg.data.block_size * accumulation * processes == 2048

    both = compose_train([*TINY, f"trainer={trainer}", "data.global_batch_tokens=2048"])
    with open_dict(both):
        both.trainer.accumulate_grad_batches = 2
    with pytest.raises(ValueError, match="set one of them"):
        derived_accumulation(both)


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
def test_k_micro_batches_make_the_same_step_as_one_k_times_larger_batch():
    config = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=50, dropout=0.0)
    x = torch.randint(0, 50, (8, 16), generator=torch.Generator().manual_seed(0))  # (B, T)
    y = torch.roll(x, -1, dims=1)

    def sgd(groups: ParamGroups) -> torch.optim.SGD:  # every parameter alike, no weight decay
        params = [*groups.embeddings, *groups.matrices, *groups.head, *groups.gains_biases]
        return torch.optim.SGD(params, lr=1.0)

    def update(batches, accumulate):
        """The change one optimizer step makes to every weight (SGD, lr 1: minus the gradient)."""
        torch.manual_seed(1)  # the same initial weights for both
        module = GPTLightningModule(config, optimizer=sgd)
        before = {k: v.clone() for k, v in module.model.state_dict().items()}
        trainer = L.Trainer(
            accelerator="cpu",
            max_steps=1,
            accumulate_grad_batches=accumulate,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
        assert trainer.global_step == 1
        return {k: before[k] - v for k, v in module.model.state_dict().items()}

    whole = update([(x, y)], accumulate=1)
    quarters = update([(x[i : i + 2], y[i : i + 2]) for i in range(0, 8, 2)], accumulate=4)
    assert any(d.abs().max() > 1e-4 for d in whole.values())
    for key, delta in whole.items():
        torch.testing.assert_close(quarters[key], delta, rtol=1e-4, atol=1e-6)


def test_matmul_precision_auto_is_tf32_on_cuda_only():
    cfg = compose_train(TINY)
    assert cfg.matmul_precision == "auto"
    assert matmul_precision(cfg) is None  # trainer=cpu: torch's exact float32
    gpu = compose_train([*TINY, "trainer=gpu"])
    assert matmul_precision(gpu) == ("high" if torch.cuda.is_available() else None)
    assert matmul_precision(compose_train([*TINY, "matmul_precision=highest"])) == "highest"


# --- several processes (their runs: test_distributed.py) ---


def test_a_launch_that_disagrees_with_the_trainer_config_is_refused(cfg_tiny, monkeypatch):
    # what torchrun --standalone --nproc_per_node=2 gives rank 0, while the config says 1 device on
    # 1 node: the global batch would be wrong. (A launch that agrees trains: test_distributed.py.)
    for key, value in dict(
        TORCHELASTIC_RUN_ID="x",
        WORLD_SIZE="2",
        RANK="0",
        LOCAL_RANK="0",
        LOCAL_WORLD_SIZE="2",
        GROUP_RANK="0",
    ).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    cfg = compose_train([*TINY, "trainer=ddp_cpu", "trainer.devices=1"])
    with open_dict(cfg):
        cfg.paths = cfg_tiny.paths
        cfg.data.path, cfg.data.data_dir = cfg_tiny.data.path, cfg_tiny.data.data_dir
    with pytest.raises(
        ValueError, match=r"this run has 2 processes, but trainer.devices x trainer.num_nodes is 1"
    ):
        train(cfg)


# --- SLURM ---


@pytest.fixture
def slurm_job(monkeypatch):
    """The environment srun gives each task of a 2-task SLURM batch job."""
    for key in list(os.environ):
        if key.startswith(("SLURM_", "TORCHELASTIC_", "SUBMITIT_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_JOB_NAME", "gpt")
    return monkeypatch


def test_slurm_tasks_share_a_folder_named_after_their_job(slurm_job):
    assert run_name() == run_name() == "slurm-4242"  # every task, whatever its clock
    slurm_job.setenv("SLURM_STEP_ID", "3")
    assert run_name() == "slurm-4242.3"
    slurm_job.setenv("SLURM_JOB_NAME", "bash")  # an interactive shell on the allocation
    assert run_name() != run_name() and run_name().count("_") == 2  # <date>_<time>_<suffix>


def test_a_requeued_slurm_job_resumes_in_its_own_folder_and_no_other(slurm_job, tmp_path):
    mine, other = RunDir.at(tmp_path / "slurm-4242"), RunDir.at(tmp_path / "2026-12-01_10-00-00_abcdef")
    for run, job in [(mine, "4242"), (other, "999")]:
        run.checkpoint_dir.mkdir(parents=True)
        run.last.write_bytes(b"x")
        Result(status="interrupted", slurm_job_id=job).write(run.path)
    new = Result(status="running", slurm_job_id="4242")
    with pytest.raises(FileExistsError):
        claim(mine, new)  # not requeued: a folder in use is refused
    slurm_job.setenv("SLURM_RESTART_COUNT", "1")  # SLURM requeued job 4242
    assert claim(mine, new) is True  # its own folder: let back in, to resume
    assert Result.read(mine.path).status == "running"
    with pytest.raises(FileExistsError):
        claim(other, new)  # the other folder is job 999's
    assert Result.read(other.path).slurm_job_id == "999"  # and stays as it was
    assert requeue_checkpoint(mine) == mine.last
    (mine.path / "hpc_ckpt_1.ckpt").write_bytes(b"x")  # Lightning's auto-requeue saved one: resume from it
    assert requeue_checkpoint(mine) is None


def test_a_requeued_slurm_job_continues_its_run_where_it_stopped(slurm_job, cfg_tiny):
    slurm_job.setenv("SLURM_NTASKS", "1")  # a one-task job, which this process can be
    slurm_job.setenv("SLURM_NTASKS_PER_NODE", "1")
    with open_dict(cfg_tiny):
        cfg_tiny.paths.output_dir = str(Path(cfg_tiny.paths.output_dir).with_name("slurm-4242"))
        cfg_tiny.trainer.max_steps = 20
        cfg_tiny.scheduler.decay_steps = 40  # the schedule of the whole run, so both parts agree
        cfg_tiny.callbacks.bleu = None
    assert train(cfg_tiny)["step"] == 20  # the first time: stopped at step 20 (here: its end)
    slurm_job.setenv("SLURM_RESTART_COUNT", "1")
    with open_dict(cfg_tiny):
        cfg_tiny.trainer.max_steps = 40
    assert train(cfg_tiny)["step"] == 40  # requeued: resumed from last.ckpt at 20, in the same folder
    record = json.loads((Path(cfg_tiny.paths.output_dir) / "result.json").read_text())
    assert record["slurm_job_id"] == "4242" and record["status"] == "completed"
    assert [s for s, _ in record["history"]["val/loss"]] == [20, 40]  # one history across the requeue
    # Lightning's CSV logger would delete the first part's metrics.csv: it is kept beside the new one
    csv_dir = Path(cfg_tiny.paths.output_dir) / "csv"
    with open(csv_dir / "metrics.before-requeue-1.csv") as f:
        before = [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")]
    after = [s for s, _ in column(read_metrics(Path(cfg_tiny.paths.output_dir)), "train/loss")]
    assert before == list(range(1, 21)) and after == list(range(21, 41))


# --- throughput ---


def test_flops_per_token_agree_with_nanogpts_estimate():
    for shape in [dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50304), {}]:
        config = GPTConfig(**shape)
        n = sum(p.numel() for p in torch.nn.Module.parameters(_meta_gpt(config)))
        n -= config.block_size * config.n_embd  # nanoGPT counts no position embeddings
        head = config.n_embd // config.n_head
        estimate = 6 * n + 12 * config.n_layer * config.n_head * head * config.block_size
        assert flops_per_token(config) == pytest.approx(estimate, rel=0.01)


def _meta_gpt(config: GPTConfig) -> torch.nn.Module:
    from nanogpt.model import GPT

    with torch.device("meta"):
        return GPT(config)


def test_throughput_and_mfu_reach_the_loggers_against_a_given_peak(trained_run):
    # the shared run's callbacks.throughput.peak_flops=1e12: a made-up peak (CPUs have none in
    # Lightning's table)
    run, cfg = trained_run.path, trained_run.cfg
    rows = read_metrics(run)
    tokens, step_ms, mfu = (dict(column(rows, f"perf/{k}")) for k in ("tokens_per_s", "step_ms", "mfu"))
    train_s = column(rows, "perf/train_s")  # seconds of training, from the first step on
    assert [step for step, _ in train_s] == list(range(1, 41))  # TINY logs every step
    assert all(a < b for (_, a), (_, b) in zip(train_s, train_s[1:], strict=False))
    # every 10 steps (trainer.log_every_n_steps) once the 10-step window is full
    assert set(tokens) == set(step_ms) == set(mfu) and len(tokens) >= 3
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    config = GPTConfig(**ckpt["hyper_parameters"]["model"])
    tokens_per_step = cfg.data.batch_size * cfg.data.block_size
    for step in tokens:
        assert tokens[step] == pytest.approx(tokens_per_step * 1000 / step_ms[step], rel=1e-3)
        # MFU: the FLOPs the model needs per second over the peak
        assert mfu[step] == pytest.approx(tokens[step] * flops_per_token(config) / 1e12, rel=1e-3)
    # the run summary: the FLOPs per token that perf/mfu counts, and the peak it divides by
    log = trained_run.log
    assert f"FLOPs/token     {flops_per_token(config) / 1e6:,.1f}M" in log
    assert "peak            1.0 TFLOP/s per device" in log
