"""The run folder's one home: result.json's schema, claiming a folder, which checkpoint ckpt_path means."""

import os
import subprocess
import sys

import pytest

from nanogpt.run_dir import Result, RunDir, claim, resolve_checkpoint

from .helpers import strict_json


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
        "import sys; from nanogpt.run_dir import Result, RunDir, claim\n"
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
    modules = ["nanogpt.sample", "nanogpt.evaluate", "nanogpt.export", "nanogpt.runs.report"]
    code = (
        f"import sys; import {', '.join(modules)}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
