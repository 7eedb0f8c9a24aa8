"""No run harms another: checkpoints hold the newest state, runs never share a folder, exits are honest,
records are valid, and bad input gets a clear one-line error (issue 14; data caches: test_data.py)."""

from __future__ import annotations

import csv
import errno
import itertools
import logging
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from nanogpt import CONFIG_DIR
from nanogpt.cli.errors import user_errors_in_one_line
from nanogpt.files import remove_stale_temps
from nanogpt.runs.checkpoint import read_checkpoint
from nanogpt.runs.names import register_resolvers
from nanogpt.training.callbacks import console
from nanogpt.training.job import train

from .helpers import TINY, run_cli, strict_json
from .helpers.callbacks import KeepBar, target


def test_last_ckpt_holds_the_final_step_even_when_val_loss_never_improves(cfg_tiny):
    with open_dict(cfg_tiny):
        cfg_tiny.optimizer.lr = 0.0  # frozen weights: val/loss never improves after the first validation
        cfg_tiny.callbacks.bleu = None
    metrics = train(cfg_tiny)
    ckpts = Path(cfg_tiny.paths.output_dir) / "checkpoints"
    assert metrics["step"] == 40
    assert read_checkpoint(ckpts / "last.ckpt")["global_step"] == 40
    assert read_checkpoint(ckpts / "best.ckpt")["global_step"] == 20


def test_a_full_disk_keeps_the_previous_checkpoint_says_so_and_marks_the_run_failed(cfg_tiny, monkeypatch):
    real_save = torch.save

    def disk_full_at_step_40(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("global_step") == 40:
            f = FullDisk(f, room=1000)  # what torch does then: RuntimeError from its zip writer
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_full_at_step_40)
    with open_dict(cfg_tiny):
        cfg_tiny.callbacks.bleu = None
    with pytest.raises(
        OSError, match=r"disk full: no room to write .*\.ckpt .* free on .*checkpoints"
    ) as err:
        train(cfg_tiny)
    assert err.value.errno == errno.ENOSPC and "inline_container" not in str(err.value)
    run = Path(cfg_tiny.paths.output_dir)
    for name in ("best.ckpt", "last.ckpt"):
        assert read_checkpoint(run / "checkpoints" / name)["global_step"] == 20  # whole, not replaced
    assert not [p.name for p in (run / "checkpoints").iterdir() if p.suffix != ".ckpt"]  # no orphan
    result = strict_json(run / "result.json")
    assert result["status"] == "failed" and "disk full" in result["error"]
    assert "resume" in result  # from the step-20 last.ckpt


class FullDisk:
    """A file that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, f, room: int) -> None:
        self.f, self.room = f, room

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def test_stale_temporary_files_of_killed_writers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead_pid = int(dead.stdout)
    host = socket.gethostname()
    killed = tmp_path / f".last.ckpt.abc.pid{dead_pid}.{host}.tmp"
    live = tmp_path / f".last.ckpt.def.pid{os.getpid()}.{host}.tmp"
    elsewhere = tmp_path / f".last.ckpt.ghi.pid{dead_pid}.another-host.tmp"
    for path in (killed, live, elsewhere):
        path.write_bytes(b"partial")
    assert remove_stale_temps(tmp_path) == [killed]
    assert live.exists() and elsewhere.exists()


def test_resuming_on_another_schedule_says_so_and_the_bar_counts_from_the_saved_step(
    cfg_tiny, caplog, monkeypatch
):
    with open_dict(cfg_tiny):
        cfg_tiny.callbacks.bleu = None
        cfg_tiny.callbacks.progress_bar = target(KeepBar)
        cfg_tiny.trainer.enable_progress_bar = True
        cfg_tiny.trainer.max_steps = 20
        cfg_tiny.scheduler.decay_steps = 40
    train(cfg_tiny)
    run = cfg_tiny.paths.output_dir

    def resume(name: str, max_steps: int) -> None:
        cfg = cfg_tiny.copy()
        with open_dict(cfg):
            cfg.paths.output_dir = f"{run}-{name}"
            cfg.ckpt_path = run
            cfg.trainer.max_steps = max_steps
            cfg.scheduler.decay_steps = max_steps
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="nanogpt"):
            train(cfg)

    resume("same", 40)  # the saved run's own decay_steps: its curve goes on
    assert "another learning-rate schedule" not in caplog.text
    # the bar's clock, made to tick half a second each time the bar reads it (once at the start, once
    # per refresh), so its rate is exact: no test waits on, or measures, the wall clock
    ticks = itertools.count()
    monkeypatch.setattr(console, "time", SimpleNamespace(perf_counter=lambda: 0.5 * next(ticks)))
    resume("longer", 80)
    assert "resuming at step 20 on another learning-rate schedule" in caplog.text
    bar = KeepBar.bars[-1]
    assert (bar.train_progress_bar.total, bar.train_progress_bar.initial) == (80, 20)
    # counted from the end of the first resumed step (which compiles or warms up): 59 steps of 8 x 32
    # tokens over 60 clock reads of 0.5 s (from step 0 it would count 80 steps' tokens, 683 tok/s)
    assert bar.tokens_per_s == round(59 * 8 * 32 / (60 * 0.5)) == 503


# --- run folders ---


def test_the_run_folder_suffix_is_random_and_fixed_within_a_config():
    register_resolvers()  # as nanogpt-train does when it starts
    cfg = OmegaConf.create({"a": "${run_suffix:}", "b": "${run_suffix:}"})
    other = OmegaConf.create({"a": "${run_suffix:}"})
    assert cfg.a == cfg.b != other.a and len(cfg.a) == 6
    named = OmegaConf.create({"a": "${run_name:%Y}", "b": "${run_name:%Y}"})
    again = OmegaConf.create({"a": "${run_name:%Y}"})
    assert named.a == named.b != again.a and re.fullmatch(r"\d{4}_[0-9a-f]{6}", named.a)
    hydra = OmegaConf.to_container(OmegaConf.load(Path(CONFIG_DIR) / "hydra" / "default.yaml"))
    assert "${run_name:" in hydra["run"]["dir"] and "${run_suffix:}" in hydra["sweep"]["dir"]
    optuna = OmegaConf.load(Path(CONFIG_DIR) / "hparams_search" / "shakespeare_optuna.yaml")
    assert "${run_suffix:}" in OmegaConf.to_container(optuna)["hydra"]["sweep"]["subdir"]


@pytest.mark.slow
def test_two_runs_started_in_the_same_second_get_their_own_folders(tmp_path, text_path):
    exe = str(Path(sys.executable).with_name("nanogpt-train"))
    common = [*TINY, "trainer.max_steps=5", "callbacks.bleu=null", f"data.path={text_path}", "name=twins"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    procs = [
        subprocess.Popen([exe, *common, f"seed={seed}"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL)
        for seed in (1, 2)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    runs = sorted((tmp_path / "runs" / "twins").iterdir())
    assert len(runs) == 2
    seeds = set()
    for run in runs:
        result = strict_json(run / "result.json")
        assert result["status"] == "completed"
        seeds.add(result["seed"])
        with open(run / "csv" / "metrics.csv") as f:
            steps = [row["step"] for row in csv.DictReader(f) if row.get("train/loss")]
        assert len(steps) == len(set(steps)) == 5  # one writer per file
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert seeds == {1, 2}


# --- records ---


def test_a_failed_run_prints_its_error_in_one_line_and_keeps_the_traceback_in_train_log(tmp_path, text_path):
    args = [*TINY, "callbacks.bleu=null", f"data.path={text_path}", "name=failing", "ckpt_path=nowhere.ckpt"]
    failed = run_cli("nanogpt-train", args, tmp_path)
    assert failed.returncode == 1
    # the message comes first, without a traceback
    assert failed.stderr.startswith("FileNotFoundError: ckpt_path=nowhere.ckpt does not exist")
    assert "Traceback" not in failed.stderr
    (run,) = (tmp_path / "runs" / "failing").iterdir()
    log = (run / "train.log").read_text()
    assert "run failed before training" in log and "ckpt_path=nowhere.ckpt does not exist" in log
    assert "Traceback (most recent call last)" in log  # the traceback is kept, in the file only
    assert strict_json(run / "result.json")["status"] == "failed"


# --- inputs ---


def test_logger_null_means_no_loggers_and_a_quoted_path_may_hold_spaces_and_non_ascii(tmp_path):
    path = tmp_path / "my texts" / "Ünïcødé sonnets.txt"
    shown = run_cli("nanogpt-train", ["logger=null", f'data.path="{path}"', "--cfg", "job"], tmp_path)
    assert shown.returncode == 0, shown.stderr
    job = OmegaConf.create(shown.stdout)
    assert "logger" not in job
    assert job.data.path == str(path)


def test_a_console_script_prints_a_user_error_in_one_line_and_exits_1(tmp_path):
    # the one wrapper of every console script (nanogpt-eval's own: test_cli_sample_eval.py)
    plain = run_cli("nanogpt-sample", ["ckpt_path=nope.ckpt"], tmp_path)
    assert plain.returncode == 1
    assert plain.stderr.startswith("FileNotFoundError: ckpt_path=nope.ckpt does not exist")
    assert "Traceback" not in plain.stderr and "HYDRA_FULL_ERROR=1" in plain.stderr


def test_user_errors_print_their_message_first_and_the_traceback_on_request(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)  # a single run, not a sweep's job
    with pytest.raises(SystemExit) as exit, user_errors_in_one_line():
        raise FileNotFoundError("ckpt_path=nope.ckpt does not exist")
    assert exit.value.code == 1
    said = "FileNotFoundError: ckpt_path=nope.ckpt does not exist\n(traceback: set HYDRA_FULL_ERROR=1)\n"
    assert capsys.readouterr().err == said
    # a training run's traceback is in its train.log, which the line names
    log = tmp_path / "train.log"
    log.write_text("Traceback (most recent call last): ...")
    with pytest.raises(SystemExit), user_errors_in_one_line(log_file=log):
        raise ValueError("bad")
    assert capsys.readouterr().err == f"ValueError: bad\n(traceback: in {log}, or set HYDRA_FULL_ERROR=1)\n"
    with pytest.raises(KeyError), user_errors_in_one_line():  # a bug keeps its traceback
        raise KeyError("x")
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # Hydra's switch: the traceback, as Hydra prints it
    with pytest.raises(FileNotFoundError), user_errors_in_one_line():
        raise FileNotFoundError("ckpt_path=nope.ckpt does not exist")
