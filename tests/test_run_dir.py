"""The run folder's one home: result.json's schema, claiming a folder, which checkpoint ckpt_path means."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from nanogpt.cli.guard import RunFolderGuard
from nanogpt.runs.folder import Result, RunDir, check_free, claim, resolve_checkpoint

from .helpers import TINY, run_cli, start, strict_json, wait_until


def test_result_json_is_strict_and_names_non_finite_values(tmp_path):
    Result(
        status="completed",
        best_val_loss=float("inf"),
        metrics={"x": float("nan"), "y": 1.5},
        history={"val/loss": [(10, 2.0), (20, float("nan"))]},
    ).write(tmp_path)
    saved = strict_json(tmp_path / "result.json")
    assert saved["best_val_loss"] is None and saved["metrics"] == {"x": None, "y": 1.5}
    named = {"best_val_loss": "inf", "metrics.x": "nan", "history.val/loss[1][1]": "nan"}
    assert saved["non_finite"] == named
    back = Result.read(tmp_path)  # and reads back as what it says
    assert back.best_val_loss is None and back.metrics == {"x": None, "y": 1.5}
    assert back.history == {"val/loss": [(10, 2.0), (20, None)]} and back.non_finite == saved["non_finite"]
    back.write(tmp_path)
    assert Result.read(tmp_path) == back


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('{"status": "completed", "best_val_los": 1.0}', r"unknown keys \['best_val_los'\]"),
        ('{"step": 3}', "has no status"),
        ('{"status": null}', "has no status"),
        ('{"status": "done"}', "status is 'done', not one of running, completed"),
        ('{"status": "completed", "step": "3"}', "step is '3', not an integer"),
        ('{"status": "completed", "history": {"val/loss": [[1]]}}', "history .* not names mapped to"),
        ('{"status": "completed"', "is not JSON"),
        ("[]", "is not a JSON object"),
    ],
)
def test_a_result_json_that_does_not_fit_the_schema_is_refused_naming_what_is_wrong(tmp_path, text, error):
    (tmp_path / "result.json").write_text(text)
    with pytest.raises(ValueError, match=error):
        Result.read(tmp_path)
    assert Result.read(tmp_path / "elsewhere") is None  # no record at all is no error


def test_a_record_that_does_not_fit_the_schema_is_not_written(tmp_path):
    with pytest.raises(ValueError, match="the result.json to write: seed is '1337', not an integer"):
        Result(status="running", seed="1337").write(tmp_path)
    assert not (tmp_path / "result.json").exists()


def test_claiming_a_folder_refuses_another_runs_and_changes_nothing_in_it(tmp_path):
    run = RunDir.at(tmp_path / "run")
    assert claim(run, Result(status="running", pid=1)) is False
    assert Result.read(run.path).pid == 1
    with pytest.raises(FileExistsError, match="already holds another run's result.json"):
        claim(run, Result(status="running", pid=2))
    assert Result.read(run.path).pid == 1
    assert claim(run, Result(status="running", pid=3), rank=1) is False  # other ranks join, write nothing
    assert Result.read(run.path).pid == 1 and sorted(p.name for p in run.path.iterdir()) == ["result.json"]

    # a new run folder whose checkpoint folder holds another run's checkpoints
    shared = RunDir.at(tmp_path / "new", run.checkpoint_dir)
    run.checkpoint_dir.mkdir()
    (run.checkpoint_dir / "last.ckpt").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="already holds checkpoints of another run"):
        claim(shared, Result(status="running"))
    assert not shared.path.exists()


def test_of_many_processes_claiming_one_folder_at_once_exactly_one_gets_it(tmp_path):
    script = (
        "import sys; from nanogpt.runs.folder import Result, RunDir, claim\n"
        "try: claim(RunDir.at(sys.argv[1]), Result(status='running', name=sys.argv[2])); print('mine')\n"
        "except FileExistsError: print('refused')\n"
    )
    command = [sys.executable, "-c", script, str(tmp_path / "run")]
    procs = [subprocess.Popen([*command, str(i)], stdout=subprocess.PIPE) for i in range(6)]
    outcomes = [p.communicate(timeout=60)[0].decode().strip() for p in procs]
    assert sorted(outcomes) == ["mine"] + ["refused"] * 5
    winner = outcomes.index("mine")
    assert Result.read(tmp_path / "run").name == str(winner)
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["result.json"]  # no temporary left


def test_ckpt_path_means_a_file_or_a_run_folders_checkpoint_wherever_the_run_kept_them(tmp_path):
    plain = RunDir.at(tmp_path / "runs" / "x" / "a")
    moved = RunDir.at(tmp_path / "runs" / "x" / "b", tmp_path / "elsewhere")
    for run in (plain, moved):
        run.checkpoint_dir.mkdir(parents=True)
        run.last.write_bytes(b"last")
        run.best.write_bytes(b"best")
        Result(status="completed", checkpoint_dir=run.recorded_checkpoint_dir).write(run.path)
    os.utime(plain.last, (1, 1))  # b's last.ckpt is the newer
    assert resolve_checkpoint(plain.best, "last") == plain.best  # a file is itself
    assert resolve_checkpoint(plain.path, "last") == plain.last
    assert resolve_checkpoint(moved.path, "last") == tmp_path / "elsewhere" / "last.ckpt"
    assert resolve_checkpoint(moved.path, "best") == tmp_path / "elsewhere" / "best.ckpt"
    runs = tmp_path / "runs" / "x"
    assert resolve_checkpoint("last", "last", runs_of=runs) == moved.last
    assert resolve_checkpoint("last", "last", runs_of=runs, exclude=moved.path) == plain.last

    with pytest.raises(FileNotFoundError, match="no checkpoint given"):
        resolve_checkpoint(None, "best")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nothing", "best")
    with pytest.raises(FileNotFoundError, match=r"without best.ckpt \(looked in .*empty/checkpoints\)"):
        (tmp_path / "empty").mkdir()
        resolve_checkpoint(tmp_path / "empty", "best")
    with pytest.raises(FileNotFoundError, match="ckpt_path=last: no earlier run"):
        resolve_checkpoint("last", "last", runs_of=tmp_path / "runs" / "y")


def test_the_tools_that_only_read_runs_import_no_lightning():
    modules = ["nanogpt.sample", "nanogpt.evaluate", "nanogpt.hf.export", "nanogpt.runs.report"]
    code = (
        f"import sys; import {', '.join(modules)}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_resuming_a_run_killed_in_its_first_save_removes_the_cut_short_file_and_says_so(tmp_path):
    run = RunDir.at(tmp_path / "run")
    claim(run, Result(status="running", pid=1))
    run.checkpoint_dir.mkdir()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    orphan = run.checkpoint_dir / f".last.ckpt.x1.pid{int(dead.stdout)}.{socket.gethostname()}.tmp"
    orphan.write_bytes(b"half a checkpoint")
    with pytest.raises(
        FileNotFoundError, match=rf"without last.ckpt .*removed {orphan.name}, the first save of a run killed"
    ):
        resolve_checkpoint(run.path, "last")
    assert not orphan.exists()


def write_run(folder: Path) -> dict[Path, bytes]:
    """A finished run's folder, as Hydra and the run left it; its files and their contents."""
    for name, text in [
        ("result.json", Result(status="completed", best_val_loss=2.0).dumps()),
        (".hydra/config.yaml", "seed: 1\n"),
        (".hydra/hydra.yaml", "hydra: {}\n"),
        (".hydra/overrides.yaml", "- seed=1\n"),
        ("train.log", "the earlier run's log\n"),
    ]:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_hydra_writes_nothing_into_another_runs_folder(tmp_path, text_path):
    old = tmp_path / "runs" / "old"
    before = write_run(old)
    args = [*TINY, f"data.path={text_path}"]
    reused = run_cli("nanogpt-train", [*args, f"hydra.run.dir={old}"], tmp_path)
    assert reused.returncode == 1
    assert reused.stderr.startswith(f"FileExistsError: {old} already holds another run's result.json")
    assert "Traceback" not in reused.stderr
    # refused before Hydra rewrote its record or appended to the log
    assert {p: p.read_bytes() for p in old.rglob("*") if p.is_file()} == before

    # a folder Hydra alone has written into (a run that died before its record) is refused too
    (old / "result.json").unlink()
    with pytest.raises(FileExistsError, match=r"already holds another run's .hydra and train.log"):
        check_free(RunDir.at(old), before_hydra=True)


def test_a_run_folder_that_cannot_be_written_or_a_name_that_leaves_the_runs_folder_is_refused(tmp_path):
    guard = RunFolderGuard()
    config = OmegaConf.create({"name": "x", "paths": {"log_dir": str(tmp_path / "ro")}, "hydra": {}})
    config.hydra.run = {"dir": str(tmp_path / "ro" / "x" / "now")}
    config.hydra.sweep = {"dir": str(tmp_path / "ro" / "x" / "multirun")}
    (tmp_path / "ro").mkdir()
    if os.geteuid() == 0:  # root writes anywhere: make the folder a file, which nobody can write into
        (tmp_path / "ro").rmdir()
        (tmp_path / "ro").write_text("")
    else:
        (tmp_path / "ro").chmod(0o500)
    try:
        for start in (guard.on_run_start, guard.on_multirun_start):
            with pytest.raises(
                SystemExit, match=r"PermissionError: cannot write the run folder .*set paths.log_dir"
            ):
                start(config=config)
        for name in ("../../escaped", "/abs"):
            config.name = name
            with pytest.raises(SystemExit, match=rf"ValueError: name={name} would put the run outside paths"):
                guard.on_run_start(config=config)
    finally:
        if (tmp_path / "ro").is_dir():
            (tmp_path / "ro").chmod(0o700)
    config.name, config.paths.log_dir = "ok/sub", str(tmp_path / "rw")
    config.hydra.run.dir = str(tmp_path / "rw" / "ok" / "sub" / "now")
    guard.on_run_start(config=config)  # a name with / is a sub-folder, and nothing is created
    assert not (tmp_path / "rw").exists()


# a nanogpt-train whose data preparation never ends, to be interrupted there
PREPARING = """
import sys, time
import nanogpt.training.spec
def preparing(config):
    print("PREPARING", flush=True)
    time.sleep(600)
nanogpt.training.spec.prepare_corpus = preparing
from nanogpt.cli.train import cli
sys.argv = ["nanogpt-train", *sys.argv[1:]]
cli()
"""


@pytest.mark.slow  # a signal to a process
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_an_interrupt_while_the_data_is_prepared_is_recorded_and_exits_as_the_shell_expects(
    tmp_path, text_path, signum
):
    args = [*TINY, f"data.path={text_path}", "name=prep"]
    proc = start([sys.executable, "-c", PREPARING, *args], tmp_path)
    wait_until(lambda: "PREPARING" in (tmp_path / "stdout.txt").read_text(), "preparation", proc)
    proc.send_signal(signum)
    proc.wait(timeout=60)
    assert proc.returncode == 128 + signum  # 143 for SIGTERM (was: killed with no record), 130 for Ctrl-C
    assert "Traceback" not in (tmp_path / "stderr.txt").read_text()
    (run,) = (tmp_path / "runs" / "prep").iterdir()
    result = strict_json(run / "result.json")
    how = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
    assert (result["status"], result["error"]) == ("interrupted", f"interrupted by {how}")
    assert "run interrupted before training" in (run / "train.log").read_text()


# a nanogpt-train that gets a Ctrl-C in the middle of its second validation
CTRL_C_IN_VALIDATION = """
import os, signal, sys
from nanogpt.training.module import GPTLightningModule
validation_step = GPTLightningModule.validation_step
def interrupting(self, batch, batch_idx):
    if self.trainer.global_step == 20 and batch_idx == 1:
        os.kill(os.getpid(), signal.SIGINT)
    return validation_step(self, batch, batch_idx)
GPTLightningModule.validation_step = interrupting
from nanogpt.cli.train import cli
sys.argv = ["nanogpt-train", *sys.argv[1:]]
cli()
"""


@pytest.mark.slow  # a signal to a process
def test_ctrl_c_in_a_validation_records_the_best_the_console_prints(tmp_path, text_path):
    args = [
        *TINY,
        "trainer.val_check_interval=10",
        "callbacks.bleu=null",
        f"data.path={text_path}",
        "name=val",
    ]
    proc = start([sys.executable, "-c", CTRL_C_IN_VALIDATION, *args], tmp_path)
    proc.wait(timeout=300)
    assert proc.returncode == 130, (tmp_path / "stderr.txt").read_text()[-3000:]
    (run,) = (tmp_path / "runs" / "val").iterdir()
    result = strict_json(run / "result.json")
    # Ctrl-C lets the validation finish and stops at the end of the next step
    assert (result["status"], result["step"]) == ("interrupted", 21)
    # the best so far, in the record (it was null) as on the console
    step, best = min(result["history"]["val/loss"], key=lambda point: point[1])
    assert result["best_val_loss"] == best and step in (10, 20)
    assert result["best_ckpt"] == str(run / "checkpoints" / "best.ckpt")
    stdout = (tmp_path / "stdout.txt").read_text()
    assert (
        f"best val/loss   {best:.4f}  of the validations at step {step}, on 2 batches of the val split"
        in stdout
    )
    # an interrupted run gets no final validation, and no hint to train longer
    assert (
        "final_val_loss" not in result and "final val/loss" not in stdout and "to train longer" not in stdout
    )
