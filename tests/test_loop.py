"""Numbers a researcher can trust: runs end validated, one step convention, the schedule follows the
run, exact resume, interrupts and crashes that lose little, clear words about the hardware."""

import copy
import dataclasses
import json
import logging
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import open_dict

from nanogpt import CONFIG_DIR
from nanogpt.devices import check_trainer_fits_machine, chosen_experiment
from nanogpt.runs.checkpoint import load_checkpoint, read_checkpoint
from nanogpt.training.job import train

from .helpers import TINY, compose_train, override, read_metrics, run_cli, start, wait_until
from .helpers.callbacks import CopyLastCkptAt, KeepBar, PoisonAt, target
from .helpers.components import MODERN


def steps_of(run: Path, key: str) -> list[int]:
    return [int(r["step"]) for r in read_metrics(run) if r.get(key)]


# --- 1. every completed run ends validated, in optimizer steps ---


def test_every_step_measurement_follows_the_loggers_one_rule(cfg_tiny):
    # every log_every_n_steps steps and at the last step, whatever the run's length: the loss, lr,
    # grad norm, throughput and the loss history all land on the same steps
    cfg = override(
        cfg_tiny, trainer__max_steps=7, trainer__log_every_n_steps=5, trainer__val_check_interval=100
    )
    with open_dict(cfg):
        cfg.callbacks.bleu = None
        cfg.scheduler.warmup_steps = 0
    metrics = train(cfg)
    run = Path(cfg.paths.output_dir)
    rows = read_metrics(run)
    for key in ("train/loss", "lr", "train/grad_norm", "perf/train_s"):
        assert [int(r["step"]) for r in rows if r.get(key)] == [5, 7], key
    history = json.loads((run / "result.json").read_text())["history"]
    assert [s for s, _ in history["train/loss"]] == [5, 7]
    assert_ended_validated(run, metrics, [7])  # a run shorter than its validation interval


def assert_ended_validated(run: Path, metrics: dict, validated: list[int]) -> None:
    assert steps_of(run, "val/loss") == validated
    assert isinstance(metrics["best_val_loss"], float)
    assert (run / "checkpoints" / "best.ckpt").is_file()
    result = json.loads((run / "result.json").read_text())
    assert isinstance(result["best_val_loss"], float) and result["step"] == validated[-1]


def test_a_completed_run_always_ends_validated(cfg_tiny, trained_run):
    # a length that is not a multiple of the interval (one shorter than it: the test above; a
    # multiple: the shared run, validated at 10, 20, 30 and 40)
    cfg = override(cfg_tiny, trainer__max_steps=30, trainer__val_check_interval=20)
    with open_dict(cfg):
        cfg.callbacks.bleu = None
    metrics = train(cfg)
    assert_ended_validated(Path(cfg.paths.output_dir), metrics, [20, 30])
    assert_ended_validated(trained_run.path, trained_run.metrics, [10, 20, 30, 40])


def test_steps_and_the_progress_bars_loss_count_optimizer_steps_under_accumulation(cfg_tiny):
    cfg = override(
        cfg_tiny, trainer__max_steps=8, trainer__val_check_interval=4, trainer__accumulate_grad_batches=4
    )
    with open_dict(cfg):
        cfg.callbacks.bleu = None
        cfg.callbacks.progress_bar = target(KeepBar)
        cfg.trainer.enable_progress_bar = True
        cfg.scheduler.warmup_steps = 1
    metrics = train(cfg)
    run = Path(cfg.paths.output_dir)
    assert metrics["step"] == 8
    assert steps_of(run, "val/loss") == [4, 8]  # not every 4 micro-batches
    assert steps_of(run, "train/loss") == list(range(1, 9))
    rows = read_metrics(run)
    (logged,) = [float(r["train/loss"]) for r in rows if r.get("train/loss") and int(r["step"]) == 8]
    # Lightning passes the loss divided by accumulate_grad_batches; the bar shows the loss itself
    assert float(KeepBar.bars[-1]._extra["loss"]) == pytest.approx(logged, rel=0.2)


def test_every_file_and_logger_counts_steps_alike(trained_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = trained_run.path
    csv_val = steps_of(run, "val/loss")
    history = json.loads((run / "result.json").read_text())["history"]
    samples = sorted(
        {json.loads(line)["step"] for line in (run / "csv" / "samples.jsonl").read_text().splitlines()}
    )
    events = EventAccumulator(str(run / "tensorboard")).Reload()
    tb_val = [e.step for e in events.Scalars("val/loss")]
    # the optimizer steps done, as the progress bar counts them: 10, 20, 30 and 40, never 9 or 19
    assert csv_val == [s for s, _ in history["val/loss"]] == tb_val == [10, 20, 30, 40]
    assert samples == steps_of(run, "val/bleu") == [10, 30]  # BLEU at every second validation
    assert steps_of(run, "train/loss")[0] == 1 and steps_of(run, "train/loss")[-1] == 40
    assert [s for s, _ in history["train/loss"]] == steps_of(run, "train/loss")


# --- 2. the schedule follows the run ---


@pytest.mark.parametrize("max_steps", [10, 57, 500])
@pytest.mark.parametrize("lr", [1e-3, 3e-3])
def test_the_last_step_trains_at_lr_times_min_lr_ratio(max_steps, lr):
    cfg = compose_train(
        ["experiment=shakespeare_char_cpu", f"trainer.max_steps={max_steps}", f"optimizer.lr={lr}"]
    )
    with open_dict(cfg):
        cfg.scheduler.warmup_steps = min(cfg.scheduler.warmup_steps, max_steps // 2)
    assert cfg.scheduler.decay_steps == max_steps  # follows the run unless set
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = instantiate(cfg.scheduler)(optimizer)
    lrs = []
    for _ in range(max_steps):  # the learning rate each optimizer step trains with
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[-1] == pytest.approx(lr * cfg.scheduler.min_lr_ratio, rel=1e-9)
    decay = lrs[cfg.scheduler.warmup_steps :]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False)) and decay[0] == pytest.approx(lr)


# --- 3. exact resume ---

# AdamW with dropout (the generators must come back), and every modern component with Muon (Muon's
# momentum and AdamW's moments travel in one optimizer state)
RESUMED = {
    "adamw-dropout": ["model.dropout=0.1"],
    "modern-muon": ["ablation=modern", "model.n_head=4", "model.n_kv_head=2"],
}


@pytest.mark.parametrize("recipe", list(RESUMED))
def test_a_resumed_run_is_bitwise_equal_to_an_uninterrupted_one(recipe, cfg_tiny, tmp_path):
    # Step 5 both validates and is a periodic save of last.ckpt: the file must hold the state after
    # that validation (its val point, and the generators the validation drew from), or the resumed
    # losses differ from the straight run's
    cfg = compose_train([*TINY, *RESUMED[recipe], "trainer.max_steps=10", "trainer.val_check_interval=5"])
    with open_dict(cfg):
        cfg.paths, cfg.data = cfg_tiny.paths, cfg_tiny.data
        cfg.compile_cache_dir = cfg_tiny.compile_cache_dir
        cfg.callbacks.bleu = None
        cfg.callbacks.last_checkpoint.every_n_train_steps = 5
    saved_at_5 = tmp_path / "saved_at_5" / "last.ckpt"
    straight = copy.deepcopy(cfg)
    with open_dict(straight):
        straight.paths.output_dir = str(tmp_path / "straight")
        straight.callbacks.keep = target(
            CopyLastCkptAt, step=5, dirpath=straight.paths.checkpoint_dir, to=str(saved_at_5)
        )
    train(straight)
    assert read_checkpoint(saved_at_5)["global_step"] == 5

    second = copy.deepcopy(cfg)
    with open_dict(second):
        second.paths.output_dir = str(tmp_path / "second")
        second.ckpt_path = str(saved_at_5)
    train(second)

    def losses(run: str) -> dict[str, str]:
        return {r["step"]: r["train/loss"] for r in read_metrics(tmp_path / run) if r.get("train/loss")}

    first_half = {s: v for s, v in losses("straight").items() if int(s) <= 5}
    resumed = {**first_half, **losses("second")}
    assert list(resumed) == [str(s) for s in range(1, 11)]  # nothing before the save trained again
    assert resumed == losses("straight")  # the exact strings logged, step by step
    a, b = (read_checkpoint(tmp_path / run / "checkpoints" / "last.ckpt") for run in ("straight", "second"))
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    # and the optimizer's state: AdamW's moments and steps, Muon's momentum buffers
    state_a, state_b = (c["optimizer_states"][0]["state"] for c in (a, b))
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[i][k], state_b[i][k]) for i in state_a for k in state_a[i])
    # the resumed run's history is the whole run's, with step 5's validation in it once
    history = json.loads((tmp_path / "second" / "result.json").read_text())["history"]
    assert [s for s, _ in history["val/loss"]] == [5, 10]
    assert history == json.loads((tmp_path / "straight" / "result.json").read_text())["history"]

    if recipe == "modern-muon":
        assert cfg.optimizer._target_ == "nanogpt.optimizers.muon"
        assert len(a["optimizer_states"][0]["param_groups"]) == 3  # AdamW's two and Muon's
        assert not [k for k in b["state_dict"] if "rope" in k]  # computed, so never stored
        # the trained checkpoint loads for sampling as the model it trained, its RoPE tables rebuilt
        model, _, _ = load_checkpoint(tmp_path / "second" / "checkpoints" / "last.ckpt")
        trained = {k: v for k, v in dataclasses.asdict(model.config).items() if k in MODERN}
        assert trained == {**MODERN, "logit_softcap": 15.0}  # configs/ablation/modern.yaml's cap
        assert all(torch.equal(p, b["state_dict"][f"model.{n}"]) for n, p in model.named_parameters())


# --- 4. interrupts and crashes lose at most a few steps ---


def cli_args(tmp_path: Path, text_path: Path, *extra: str) -> list[str]:
    return [
        *TINY,
        "trainer.max_steps=400",
        "trainer.val_check_interval=100",
        "callbacks.bleu=null",
        "callbacks.last_checkpoint.every_n_train_steps=10",
        f"data.path={text_path}",
        "name=sig",
        "paths.root_dir=.",
        *extra,
    ]


def stderr_of(cwd: Path) -> str:
    return (cwd / "stderr.txt").read_text()


def wait_for_output(proc: subprocess.Popen, cwd: Path, text: str) -> None:
    wait_until(lambda: text in (cwd / "stdout.txt").read_text(), f"printing {text!r}", proc)


def wait_for_last_ckpt(tmp_path: Path, proc: subprocess.Popen) -> Path:
    found = wait_until(
        lambda: list((tmp_path / "runs" / "sig").glob("*/checkpoints/last.ckpt")), "a last.ckpt", proc
    )
    return found[0]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_run_saves_its_step_and_says_how_to_resume(tmp_path, text_path, signum):
    proc = start(
        [str(Path(sys.executable).with_name("nanogpt-train")), *cli_args(tmp_path, text_path)], tmp_path
    )
    wait_for_last_ckpt(tmp_path, proc)
    proc.send_signal(signum)
    proc.wait(timeout=120)
    assert proc.returncode == 128 + signum  # 130 for Ctrl-C, 143 for SIGTERM, as shells expect
    (run,) = (tmp_path / "runs" / "sig").iterdir()
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "interrupted" and 0 < result["step"] < 400
    assert result["error"] == f"interrupted by {'Ctrl-C' if signum == signal.SIGINT else 'SIGTERM'}"
    step = read_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"]
    assert step == result["step"]  # the checkpoint holds the step the run stopped at
    # the console and train.log say how to resume; result.json keeps the command
    for text in ((tmp_path / "stdout.txt").read_text(), (run / "train.log").read_text()):
        assert f"run interrupted at step {step}" in text and result["resume"] in text
    command = shlex.split(result["resume"])
    assert command[0] == "nanogpt-train" and command[-1] == f"ckpt_path={run}"

    if signum == signal.SIGTERM:
        return  # the same command as Ctrl-C's, run below
    # the printed command, run as printed; only the length is shortened (the run's other 390 steps
    # would prove nothing more)
    resumed = run_cli("nanogpt-train", [*command[1:], f"trainer.max_steps={step + 5}"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (second,) = [p for p in (tmp_path / "runs" / "sig").iterdir() if p != run]
    final = json.loads((second / "result.json").read_text())
    assert final["status"] == "completed" and final["step"] == step + 5
    assert min(steps_of(second, "train/loss")) == step + 1


def slowed_training(when: str, ctrl_c_at: int | None = None) -> str:
    """A ``nanogpt-train`` whose ``torch.save`` stalls for 10 minutes, half-written, once ``when`` holds.

    With ``ctrl_c_at`` it sends itself Ctrl-C after that step, which must be one no save falls on.
    """
    ctrl_c = f"""
from nanogpt.training.callbacks.checkpoints import LastCheckpoint
hook = LastCheckpoint.on_train_batch_end
def interrupting(self, trainer, *args):
    hook(self, trainer, *args)
    if trainer.global_step == {ctrl_c_at}:
        os.kill(os.getpid(), signal.SIGINT)
LastCheckpoint.on_train_batch_end = interrupting
"""
    return f"""
import inspect, os, signal, sys, time, torch
{ctrl_c if ctrl_c_at else ""}
real_save, saves = torch.save, []
def slow_save(obj, f, *args, **kwargs):
    saves.append(obj["global_step"])
    real_save(obj, f, *args, **kwargs)
    if {when}:
        f.write(b"partial")
        print("SAVING", flush=True)
        time.sleep(600)
torch.save = slow_save
from nanogpt.cli.train import main
sys.argv = ["nanogpt-train", *sys.argv[1:]]
main()
"""


def killed_while_saving(tmp_path: Path, text_path: Path, when: str) -> Path:
    """The folder of a run killed (``kill -9``) in the middle of the save at which ``when`` holds."""
    proc = start([sys.executable, "-c", slowed_training(when), *cli_args(tmp_path, text_path)], tmp_path)
    wait_for_output(proc, tmp_path, "SAVING")
    proc.kill()
    proc.wait()
    (run,) = (tmp_path / "runs" / "sig").iterdir()
    return run


@pytest.mark.slow
def test_kill_9_during_a_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, text_path):
    run = killed_while_saving(tmp_path, text_path, "len(saves) == 2")
    # the first checkpoint, at step 10, is whole; the second never replaced it
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 10
    assert json.loads((run / "result.json").read_text())["status"] == "running"  # a report says failed
    (orphan,) = (run / "checkpoints").glob(".last.ckpt.*.tmp")  # the cut-short write, in its own folder
    args = [*cli_args(tmp_path, text_path), "trainer.max_steps=12", f"ckpt_path={run}"]
    resumed = run_cli("nanogpt-train", args, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not orphan.exists()  # resuming the run cleaned it up


@pytest.mark.slow
def test_kill_9_during_the_first_checkpoint_write_leaves_nothing_once_the_run_is_resumed(tmp_path, text_path):
    run = killed_while_saving(tmp_path, text_path, "len(saves) == 1")
    (orphan,) = (run / "checkpoints").glob(".last.ckpt.*.tmp")  # the whole model, cut short
    assert not (run / "checkpoints" / "last.ckpt").exists()
    resumed = run_cli("nanogpt-train", [*cli_args(tmp_path, text_path), f"ckpt_path={run}"], tmp_path)
    assert resumed.returncode == 1 and "Traceback" not in resumed.stderr
    assert f"removed {orphan.name}, the first save of a run killed while writing it" in resumed.stderr
    assert not orphan.exists()


@pytest.mark.slow
def test_a_second_ctrl_c_exits_at_once_and_keeps_the_previous_checkpoint(tmp_path, text_path):
    # the first Ctrl-C comes from the run itself after step 15, so it never falls on a step that a
    # periodic save (every 10) has just saved, where there would be nothing left to save
    interrupt_save = slowed_training(
        'any(frame.function == "on_exception" for frame in inspect.stack())', ctrl_c_at=15
    )
    proc = start([sys.executable, "-c", interrupt_save, *cli_args(tmp_path, text_path)], tmp_path)
    wait_for_output(proc, tmp_path, "SAVING")
    (last,) = (tmp_path / "runs" / "sig").glob("*/checkpoints/last.ckpt")
    before = read_checkpoint(last)["global_step"]
    assert before == 10  # the periodic save; the interrupt's save of step 15 is stalled
    proc.send_signal(signal.SIGINT)
    # without waiting out the stalled 600 s save; the margin is for a loaded machine, not a speed bound
    proc.wait(timeout=180)
    assert proc.returncode != 0
    assert read_checkpoint(last)["global_step"] == before  # whole, and never replaced
    assert not list(last.parent.glob(".*.tmp"))  # the half-written file was removed
    assert json.loads((last.parents[1] / "result.json").read_text())["status"] == "interrupted"


def test_a_truncated_checkpoint_names_a_loadable_one_of_the_same_run(trained_run, cfg_tiny, tmp_path):
    ckpts = tmp_path / "damaged" / "checkpoints"
    shutil.copytree(trained_run.path / "checkpoints", ckpts)
    data = (ckpts / "last.ckpt").read_bytes()
    (ckpts / "last.ckpt").write_bytes(data[: len(data) // 3])  # as a full disk would leave it
    resume = cfg_tiny.copy()
    with open_dict(resume):
        resume.paths.output_dir = str(tmp_path / "resume")
        resume.ckpt_path = str(ckpts.parent)
    with pytest.raises(
        ValueError, match=r"last.ckpt is not a readable checkpoint.*best.ckpt of the same folder loads"
    ):
        train(resume)


@pytest.mark.parametrize(
    "log_every,nan_at,stops_at",
    [
        (1, 15, 15),
        (4, 15, 16),  # read on the next step the loggers are handed
        (7, 20, 20),  # not a loggers' step, but the validation there reads it before it starts
    ],
)
def test_a_nan_loss_stops_the_run_naming_that_step_and_keeps_the_good_checkpoints(
    cfg_tiny, log_every, nan_at, stops_at
):
    # the loss is read off the device on the loggers' steps and before any validation or save, so
    # the run stops within log_every_n_steps of the NaN, saves nothing of it, and names its step
    cfg = override(
        cfg_tiny, trainer__max_steps=40, trainer__val_check_interval=10, trainer__log_every_n_steps=log_every
    )
    with open_dict(cfg):
        cfg.callbacks.bleu = None
        cfg.callbacks.poison = target(PoisonAt, step=nan_at)
    with pytest.raises(
        FloatingPointError, match=rf"train/loss is nan at step {nan_at}.*last good checkpoint is .*ckpt"
    ):
        train(cfg)
    run = Path(cfg.paths.output_dir)
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "failed" and f"train/loss is nan at step {nan_at};" in result["error"]
    assert result["step"] == stops_at
    # the message and the record agree on where the run stopped
    stopped = "the run stops there" if stops_at == nan_at else f"stopped at step {stops_at}"
    assert stopped in result["error"]
    for name in ("best.ckpt", "last.ckpt"):  # saved at step 10, before the NaN; never replaced by it
        ckpt = read_checkpoint(run / "checkpoints" / name)
        assert ckpt["global_step"] == 10
        assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


# --- 6. clear words about the hardware ---


def test_the_gpu_recipe_on_a_machine_without_cuda_names_the_cpu_recipe(cfg_tiny, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = compose_train(["experiment=shakespeare_char"])
    with open_dict(cfg):
        cfg.paths.output_dir = cfg_tiny.paths.output_dir
        cfg.data.data_dir = cfg_tiny.data.data_dir
        cfg.data.path = cfg_tiny.data.path
    with pytest.raises(
        ValueError, match=r"trains on a GPU.*no CUDA.*experiment=shakespeare_char_cpu.*trainer=cpu"
    ):
        train(cfg)
    assert not Path(cfg.data.data_dir).exists()  # refused before any data work


def test_the_gpu_refusal_names_the_chosen_experiment_not_the_run_name(cfg_tiny, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        composed = compose("train", ["experiment=shakespeare_char", "name=bpe"], return_hydra_config=True)
    # as nanogpt-train runs it: Hydra's record of the command, which names the chosen experiment
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)
    HydraConfig.instance().set_config(composed)
    cfg = compose_train(["experiment=shakespeare_char", "name=bpe"])
    with open_dict(cfg):
        cfg.paths.output_dir = cfg_tiny.paths.output_dir
        cfg.data.data_dir = cfg_tiny.data.data_dir
    with pytest.raises(ValueError, match=r"^experiment=shakespeare_char trains on a GPU") as refused:
        train(cfg)
    assert "experiment=bpe" not in str(refused.value)
    # no experiment chosen (name=bpe on the default recipe with trainer=gpu): the refusal names none
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        composed = compose("train", ["trainer=gpu", "name=bpe"], return_hydra_config=True)
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)
    HydraConfig.instance().set_config(composed)
    with pytest.raises(ValueError, match=r"^this run trains on a GPU"):
        check_trainer_fits_machine(composed.trainer, chosen_experiment())


def test_bf16_on_a_cpu_without_native_bf16_is_warned_about(monkeypatch, caplog):
    trainer = compose_train(["trainer=cpu", "trainer.precision=bf16-mixed"]).trainer
    monkeypatch.setattr("nanogpt.devices.cpu_has_native_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger="nanogpt.devices"):
        check_trainer_fits_machine(trainer)
    assert "about 7x slower than float32" in caplog.text and "trainer.precision=32-true" in caplog.text
    caplog.clear()
    monkeypatch.setattr("nanogpt.devices.cpu_has_native_bf16", lambda: True)
    check_trainer_fits_machine(trainer)
    assert caplog.text == ""
