"""Sweeps: Hydra multirun (grid and Optuna), the sweep report, seed statistics, and their errors."""

import csv
import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from nanogpt.runs.record import write_result
from nanogpt.runs.report import find_jobs, mean_ci, seed_statistics, write_report
from nanogpt.runs.report import main as report_main
from nanogpt.runs.sweep import check_single_process, processes_per_job

from .conftest import SEARCHED_KEYS, TINY, run_cli

# the tiny recipe, shortened: a job trains for 10 steps, validates twice and scores BLEU on 4 prompts
SWEEP = [
    *TINY,
    "trainer.max_steps=10",
    "trainer.val_check_interval=5",
    "callbacks.bleu.num_prompts=4",
    "callbacks.bleu.prompt_tokens=16",
    "callbacks.bleu.continuation_tokens=16",
    "paths.root_dir=.",
]


def sweep(
    tmp_path: Path, text_path: Path, *args: str, base: list[str] = SWEEP
) -> subprocess.CompletedProcess:
    command = ["-m", *base, f"data.path={text_path}", *args]
    return run_cli("nanogpt-train", command, cwd=tmp_path, timeout=600)


def sweep_dirs(tmp_path: Path, name: str) -> list[Path]:
    root = tmp_path / "runs" / name
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def assert_png(path: Path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = matplotlib.image.imread(path).shape  # decodes the whole image
    assert height > 100 and width > 100


def test_grid_sweep_gives_every_job_a_folder_and_reports_them_all(tmp_path, text_path):
    result = sweep(tmp_path, text_path, "name=grid", "optimizer.lr=1e-3,3e-3", "model.n_layer=1,2")
    assert result.returncode == 0, result.stderr[-3000:]
    (root,) = sweep_dirs(tmp_path, "grid")
    jobs = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert jobs == ["0", "1", "2", "3"]
    for job in jobs:
        saved = json.loads((root / job / "result.json").read_text())
        assert saved["status"] == "completed" and saved["step"] == 10
        assert (root / job / "checkpoints" / "best.ckpt").is_file()
        assert_png(root / job / "loss.png")

    rows = read_csv(root / "report.csv")
    assert len(rows) == 4
    assert {(r["optimizer.lr"], r["model.n_layer"]) for r in rows} == {
        ("0.001", "1"),
        ("0.001", "2"),
        ("0.003", "1"),
        ("0.003", "2"),
    }
    losses = [float(r["best_val_loss"]) for r in rows]
    assert losses == sorted(losses)  # best first
    assert all(
        r["status"] == "completed" and r["steps"] == "10" and float(r["wall_time_s"]) > 0 for r in rows
    )
    md = (root / "report.md").read_text()
    assert md.count("| completed |") == 4 and "| optimizer.lr | model.n_layer |" in md
    assert_png(root / "val_loss.png")


def test_a_failed_job_is_recorded_and_the_others_still_run(tmp_path, text_path):
    result = sweep(tmp_path, text_path, "name=failing", "data.batch_size=0,8")
    assert result.returncode != 0  # Hydra reports the failed job once every job has run
    assert "data.batch_size must be a positive integer" in result.stderr
    (root,) = sweep_dirs(tmp_path, "failing")
    rows = {r["data.batch_size"]: r for r in read_csv(root / "report.csv")}
    assert rows["8"]["status"] == "completed" and float(rows["8"]["best_val_loss"]) > 0
    assert (
        rows["0"]["status"] == "failed" and "data.batch_size must be a positive integer" in rows["0"]["error"]
    )
    assert "## Failed jobs" in (root / "report.md").read_text()


def test_an_unknown_sweep_key_fails_before_any_job(tmp_path, text_path):
    result = sweep(tmp_path, text_path, "name=typo", "optimizer.lrr=1e-3,3e-3")
    assert result.returncode != 0
    assert "Could not override 'optimizer.lrr'" in result.stderr
    assert sweep_dirs(tmp_path, "typo") == []  # no sweep folder, no job


def test_an_unknown_option_of_a_swept_group_fails_before_any_job(tmp_path, text_path):
    result = sweep(tmp_path, text_path, "name=typo", "model=gpt_tiny,gpt_tiiny")
    assert result.returncode != 0
    assert "the sweep parameter 'model=gpt_tiny,gpt_tiiny'" in result.stderr
    assert "Could not find 'model/gpt_tiiny'" in result.stderr
    assert sweep_dirs(tmp_path, "typo") == []


def test_a_multi_process_trainer_is_refused_under_multirun(tmp_path, text_path):
    # Lightning's ddp launcher would re-run the whole sweep in its child processes
    result = sweep(tmp_path, text_path, "name=ddp", "trainer=ddp_cpu", "optimizer.lr=1e-3,3e-3")
    assert result.returncode != 0
    assert "starts 2 processes per job" in result.stderr
    assert sweep_dirs(tmp_path, "ddp") == []


def test_processes_per_job_reads_devices_and_nodes():
    def processes(**trainer):
        return processes_per_job(OmegaConf.create({"accelerator": "cpu", **trainer}))

    assert processes(devices=1) == 1
    assert processes(devices=2) == 2
    assert processes(devices="2", num_nodes=2) == 4
    assert processes(devices=[0, 1]) == 2
    assert processes(devices="0,1,2") == 3
    assert processes(devices="auto") == 1  # one CPU device
    check_single_process(1)
    with pytest.raises(ValueError, match=r"strategy=ddp starts 4 processes per job.*trainer.devices=1"):
        check_single_process(4, "ddp")


def test_optuna_sweep_resumes_its_study_from_sqlite(tmp_path, text_path):
    # the [sweep] extra, which the README's test command installs
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    study = pytest.importorskip("optuna")
    args = [
        "name=search",
        "hparams_search=shakespeare_optuna",
        "hydra.sweeper.n_trials=2",
        # a smaller space for width and depth keeps the trials quick
        "model.n_embd=choice(32,64)",
        "model.n_layer=choice(1,2)",
        # the search's warm-ups (up to 200 steps) must fit in the schedule of these 10-step runs
        "scheduler.decay_steps=1000",
    ]
    # the tiny recipe fixes lr and warm-up, which would take them out of the search
    base = [a for a in SWEEP if not a.startswith(("optimizer.lr=", "scheduler.warmup_steps="))]
    first = sweep(tmp_path, text_path, *args, base=base)
    assert first.returncode == 0, first.stderr[-3000:]
    root = tmp_path / "runs" / "search" / "optuna_search"
    storage = f"sqlite:///{root / 'optuna.db'}"
    trials = study.load_study(study_name="search", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 2
    # every searched parameter was suggested, and the job that ran used it
    assert set(trials[0].params) == SEARCHED_KEYS

    again = sweep(tmp_path, text_path, *args, base=base)  # the same command continues the same study
    assert again.returncode == 0, again.stderr[-3000:]
    trials = study.load_study(study_name="search", storage=storage).trials
    assert len(trials) == 4 and all(t.state.name == "COMPLETE" for t in trials)

    rows = read_csv(root / "report.csv")
    assert len(rows) == 4
    best = min(t.value for t in trials)
    assert float(rows[0]["best_val_loss"]) == pytest.approx(best)
    # the job folder of the best trial ran with the trial's parameters
    job = next(p for p in root.iterdir() if p.name == rows[0]["job"])
    config = OmegaConf.load(job / "config.yaml")
    best_trial = min(trials, key=lambda t: t.value)
    assert config.model.n_embd == best_trial.params["model.n_embd"]
    assert config.optimizer.lr == pytest.approx(best_trial.params["optimizer.lr"])


def test_an_optuna_search_over_an_unknown_key_fails_before_the_first_trial(tmp_path, text_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    result = sweep(
        tmp_path,
        text_path,
        "name=search",
        "hparams_search=shakespeare_optuna",
        "model.dropoutt=interval(0.0,0.3)",
    )
    assert result.returncode != 0
    assert "Could not override 'model.dropoutt'" in result.stderr
    assert sweep_dirs(tmp_path, "search") == []  # no study was created, no trial ran


# --- the report, on job folders written here ---


def fake_job(root: Path, name: str, overrides: list[str], status: str = "completed", **result) -> Path:
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), job / ".hydra" / "overrides.yaml")
    if status:
        write_result(job, {"status": status, "overrides": overrides, **result})
    return job


def test_mean_and_confidence_interval_on_known_numbers():
    mean, std, half = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    assert mean == 3.0
    assert std == pytest.approx(1.5811388)  # sqrt(2.5)
    assert half == pytest.approx(2.7764451 * 1.5811388 / 5**0.5)  # t(0.975, 4) = 2.776
    mean, std, half = mean_ci([2.0, 4.0])
    assert (mean, std) == (3.0, pytest.approx(2**0.5))
    assert half == pytest.approx(12.7062047 * 1.0)  # t(0.975, 1) x sqrt(2) / sqrt(2)
    assert mean_ci([1.5])[0] == 1.5 and all(v != v for v in mean_ci([1.5])[1:])  # nan without spread


def test_seed_sweep_report_gives_mean_and_ci_per_configuration(tmp_path):
    losses = {"1e-3": [1.0, 2.0, 3.0], "3e-3": [1.5, 1.6, 1.7]}
    for i, (lr, values) in enumerate(losses.items()):
        for seed, value in enumerate(values, 1):
            fake_job(
                tmp_path, f"{i}{seed}", [f"optimizer.lr={lr}", f"seed={seed}"], best_val_loss=value, step=10
            )

    stats = seed_statistics(find_jobs(tmp_path))
    assert [(s.params, s.n) for s in stats] == [({"optimizer.lr": "3e-3"}, 3), ({"optimizer.lr": "1e-3"}, 3)]
    assert stats[0].mean == pytest.approx(1.6) and stats[1].mean == pytest.approx(2.0)
    t2 = 4.3026527  # t(0.975, 2)
    assert stats[1].ci95 == pytest.approx(t2 * 1.0 / 3**0.5)
    assert stats[0].ci95 == pytest.approx(t2 * 0.1 / 3**0.5)

    write_report(tmp_path)
    rows = read_csv(tmp_path / "seeds.csv")
    assert [(r["optimizer.lr"], r["n"]) for r in rows] == [("3e-3", "3"), ("1e-3", "3")]
    assert float(rows[1]["low"]) == pytest.approx(2.0 - t2 / 3**0.5)
    md = (tmp_path / "report.md").read_text()
    assert "## Over seeds" in md and "2.0000 ± 2.4841" in md


def test_report_marks_crashed_and_failed_jobs_as_failed(tmp_path):
    fake_job(
        tmp_path,
        "0",
        ["model.n_layer=2"],
        best_val_loss=2.0,
        step=40,
        history={"val/loss": [[20, 2.5], [40, 2.0]]},
    )
    fake_job(tmp_path, "1", ["model.n_layer=4"], status="failed", error="RuntimeError: out of memory")
    # killed mid-run: its result still says running, and its process is gone
    fake_job(tmp_path, "2", ["model.n_layer=6"], status="running", host=socket.gethostname(), pid=2**22 + 7)
    fake_job(tmp_path, "3", ["model.n_layer=8"], status=None)  # died before writing anything

    result = run_cli("nanogpt-report", [str(tmp_path)], cwd=tmp_path)  # the console script
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| rank | job | model.n_layer |" in result.stdout and "written: " in result.stdout
    rows = {r["model.n_layer"]: r for r in read_csv(tmp_path / "report.csv")}
    assert rows["2"]["status"] == "completed" and rows["2"]["rank"] == "1"
    assert rows["4"]["status"] == "failed" and rows["4"]["error"] == "RuntimeError: out of memory"
    assert rows["6"]["status"] == "failed" and "stopped without a result" in rows["6"]["error"]
    assert rows["8"]["status"] == "failed"
    assert "4 jobs: 1 completed, 3 failed" in (tmp_path / "report.md").read_text()
    assert_png(tmp_path / "val_loss.png")


def test_a_running_job_is_reported_as_running(tmp_path):
    fake_job(tmp_path, "0", ["seed=1"], status="running", host=socket.gethostname(), pid=os.getpid())
    (job,) = find_jobs(tmp_path)
    assert job.status == "running"


@pytest.mark.parametrize("make", ["missing", "single_run", "empty"])
def test_report_of_a_folder_that_is_not_a_sweep_says_what_to_pass(tmp_path, capsys, make):
    target = tmp_path / "sweep"
    if make != "missing":
        target.mkdir()
    if make == "single_run":
        write_result(target, {"status": "completed"})
    with pytest.raises(SystemExit) as exit_:
        report_main([str(target)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "runs/<experiment>/multirun_<time>" in err
    assert ("single run's folder" in err) == (make == "single_run")
    assert not (target / "report.md").exists()
