"""Sweeps: Hydra multirun of a grid, the sweep report, seed statistics, and their errors. (Optuna's
searches: test_search.py.)"""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict

from nanogpt import CONFIG_DIR
from nanogpt.cli.report import main as report_main
from nanogpt.devices import processes_per_job
from nanogpt.runs.folder import Result
from nanogpt.runs.plan import Plan
from nanogpt.runs.report import find_jobs, write_report
from nanogpt.runs.stats import mean_ci, seed_statistics, student_t_quantile
from nanogpt.sweeps.callback import SweepCallback, plan_sweep, sweep_overrides
from nanogpt.sweeps.launch import sweep_strategy

from .helpers import (
    TINY,
    compose_train,
    read_csv,
    run_cli,
    start,
    sweep,
    sweep_dirs,
    wait_until,
)
from .helpers.callbacks import PROBE, read_ranks
from .helpers.callbacks import ROOT as PROBE_ROOT


def assert_png(path: Path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = matplotlib.image.imread(path).shape  # decodes the whole image
    assert height > 100 and width > 100


@pytest.mark.slow  # a sweep of 4 jobs, 2 on 2 processes each
def test_grid_sweep_gives_every_job_a_folder_its_ranks_and_reports_them_all(tmp_path, text_path):
    # one job of the grid fails (a batch of 0 windows): it is recorded, and the others still run; each
    # job trains on two processes: trainer=ddp_cpu re-runs the command in its second rank, so under -m
    # each job starts its ranks in-process (ddp_spawn)
    args = ["name=grid", "trainer=ddp_cpu", "optimizer.lr=1e-3,3e-3", "data.batch_size=0,8"]
    result = sweep(tmp_path, text_path, *args, "callbacks.bleu=null", *PROBE, env={"PYTHONPATH": PROBE_ROOT})
    assert result.returncode != 0  # Hydra reports the failed jobs once every job has run
    assert "data.batch_size must be a positive integer" in result.stderr
    (root,) = sweep_dirs(tmp_path, "grid")
    jobs = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert jobs == ["0", "1", "2", "3"]  # the sweep ran once: no rank re-ran it
    # data.batch_size=8 (the base's batch size comes first, so it varies slowest)
    for job, lr in [(root / "2", 1e-3), (root / "3", 3e-3)]:
        saved = json.loads((job / "result.json").read_text())
        assert saved["status"] == "completed" and saved["step"] == 10
        assert (job / "checkpoints" / "best.ckpt").is_file()
        assert_png(job / "loss.png")
        ranks = read_ranks(job)
        assert [r["rank"] for r in ranks] == [0, 1] and {r["world_size"] for r in ranks} == {2}
        assert len({r["pid"] for r in ranks}) == 2
        assert "this job starts its ranks with trainer.strategy=ddp_spawn" in (job / "train.log").read_text()
        assert all(r["lr"] == pytest.approx(lr) for r in ranks)
        assert ranks[0]["batches"] != ranks[1]["batches"]  # each rank its own windows
        assert ranks[0]["val_loss"] == ranks[1]["val_loss"]  # one val/loss, averaged over both
        assert saved["best_val_loss"] == pytest.approx(min(ranks[0]["val_loss"]))
        # config.yaml and the loggers hold the strategy the ranks trained with, not the composed ddp
        recorded = OmegaConf.load(job / "config.yaml")
        assert recorded.trainer.strategy == "ddp_spawn" and {r["strategy"] for r in ranks} == {"DDPStrategy"}
        assert (
            recorded.optimizer.lr == pytest.approx(lr)
            and recorded.model.vocab_size == ranks[0]["model"]["vocab_size"]
        )
        logged = OmegaConf.load(job / "csv" / "hparams.yaml")
        assert logged.trainer == recorded.trainer and logged.optimizer == recorded.optimizer

    rows = read_csv(root / "report.csv")
    assert {(r["optimizer.lr"], r["data.batch_size"]) for r in rows} == {
        ("0.001", "0"),
        ("0.001", "8"),
        ("0.003", "0"),
        ("0.003", "8"),
    }
    done = [r for r in rows if r["status"] == "completed"]
    assert [r["data.batch_size"] for r in done] == ["8", "8"] and rows[:2] == done  # ranked first
    losses = [float(r["best_val_loss"]) for r in done]
    assert losses == sorted(losses)  # best first
    assert all(r["steps"] == "10" and float(r["wall_time_s"]) > 0 for r in done)
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 2 and all(
        "data.batch_size must be a positive integer" in r["error"] for r in failed
    )
    md = (root / "report.md").read_text()
    assert md.count("| completed |") == 2 and "| data.batch_size | optimizer.lr |" in md
    assert "4 jobs planned: 2 completed, 2 failed." in md and "never ran" not in md
    assert "## Failed jobs" in md
    assert_png(root / "val_loss.png")
    # the plan written before the first job is, job by job, what Hydra ran
    plan = json.loads((root / "sweep.json").read_text())
    assert plan["ended"] is True
    assert plan["jobs"] == [list(OmegaConf.load(root / job / ".hydra" / "overrides.yaml")) for job in jobs]


def test_an_unknown_sweep_key_fails_before_any_job(tmp_path, text_path):
    result = sweep(tmp_path, text_path, "name=typo", "optimizer.lrr=1e-3,3e-3")
    assert result.returncode != 0
    assert "Could not override 'optimizer.lrr'" in result.stderr
    assert "(checked before the first job; nothing was run)" in result.stderr
    assert sweep_dirs(tmp_path, "typo") == []  # no sweep folder, no job


def refusal_before_the_first_job(tmp_path: Path, overrides: list[str]) -> str:
    """What the sweep callback says, before any job starts, of ``nanogpt-train -m <overrides>``.

    In this process: the one command that refuses a sweep through the console script is the test
    above; these check what is refused.
    """
    parser = OverridesParser.create()
    plain = [o for o in overrides if not parser.parse_override(o).is_sweep_override()]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        config = compose(config_name="train", overrides=plain, return_hydra_config=True)
        with open_dict(config):
            config.hydra.overrides.task = overrides  # as the command line gave them, sweeps and all
            config.hydra.sweep.dir = str(tmp_path / "sweep")
        with pytest.raises(SystemExit) as refused:
            SweepCallback().on_multirun_start(config)
    assert not (tmp_path / "sweep").exists()  # refused before the sweep folder (and any study) exists
    return str(refused.value.code)


@pytest.mark.parametrize(
    ("overrides", "messages"),
    [
        (
            ["model=gpt_tiny,gpt_tiiny"],
            ["the sweep parameter 'model=gpt_tiny,gpt_tiiny'", "Could not find 'model/gpt_tiiny'"],
        ),
        # two machines need a cluster launcher: this process cannot start the other machine's ranks
        (
            ["trainer=ddp_cpu", "trainer.num_nodes=2", "optimizer.lr=1e-3,3e-3"],
            ["trainer.num_nodes=2 machines", "submitit_slurm"],
        ),
        # an Optuna search: hydra.sweeper.params and the command line's, before the first trial
        (
            ["hparams_search=shakespeare_optuna", "model.dropoutt=interval(0.0,0.3)"],
            ["Could not override 'model.dropoutt'"],
        ),
    ],
    ids=["unknown-group-option", "two-machines", "optuna-unknown-key"],
)
def test_what_cannot_run_is_refused_before_the_first_job(tmp_path, overrides, messages):
    if "hparams_search" in overrides[0]:
        pytest.importorskip("optuna")
    said = refusal_before_the_first_job(tmp_path, overrides)
    assert all(m in said for m in messages), said
    assert said.endswith("(checked before the first job; nothing was run)")


def test_processes_per_job_reads_devices_and_nodes():
    def processes(**trainer):
        return processes_per_job(OmegaConf.create({"accelerator": "cpu", **trainer}))

    assert processes(devices=1) == 1
    assert processes(devices=2) == 2
    assert processes(devices="2", num_nodes=2) == 4
    assert processes(devices=[0, 1]) == 2
    assert processes(devices="0,1,2") == 3
    assert processes(devices="auto") == 1  # one CPU device


def test_sweep_strategy_keeps_what_is_safe_and_refuses_what_is_not():
    def strategy(launched_outside: bool = False, **trainer):
        return sweep_strategy(OmegaConf.create({"accelerator": "cpu", **trainer}), launched_outside)

    assert strategy(devices=1, strategy="ddp") is None  # one process: nothing to launch
    assert strategy(devices=2, strategy="ddp") == "ddp_spawn"
    assert strategy(devices=2) == "ddp_spawn"  # Lightning's auto is ddp for several devices
    assert (
        strategy(devices=2, strategy="ddp_find_unused_parameters_true")
        == "ddp_spawn_find_unused_parameters_true"
    )
    assert strategy(devices=2, strategy="ddp_spawn") is None
    # torchrun or SLURM started the ranks: each is this job already
    assert strategy(True, devices=2, num_nodes=2, strategy="ddp") is None
    with pytest.raises(ValueError, match=r"trainer.strategy=fsdp starts 2 processes per job by re-running"):
        strategy(devices=2, strategy="fsdp")
    fsdp = OmegaConf.to_container(compose_train(["trainer=fsdp"]).trainer.strategy, resolve=False)
    with pytest.raises(ValueError, match=r"trainer.strategy=fsdp starts 2 processes per job by re-running"):
        strategy(devices=2, strategy=fsdp)  # trainer=fsdp's configured FSDPStrategy
    with pytest.raises(ValueError, match=r"num_nodes=2 machines.*hydra/launcher=submitit_slurm"):
        strategy(devices=2, num_nodes=2, strategy="ddp")


# --- an interrupted sweep: its exit code, and a report that names the jobs that never ran ---


def start_sweep(tmp_path: Path, text_path: Path) -> subprocess.Popen:
    """A 3-job grid of tiny runs too long to finish; its output goes to tmp_path's stdout/stderr.txt."""
    args = [
        "-m",
        *TINY,
        "trainer.max_steps=100000",
        "compile=false",  # compile=auto would compile so long a run's step first, for a minute
        "callbacks.bleu=null",
        "callbacks.last_checkpoint.every_n_train_steps=10",
        f"data.path={text_path}",
        "paths.root_dir=.",
        "name=stop",
        "seed=1,2,3",
    ]
    return start([str(Path(sys.executable).with_name("nanogpt-train")), *args], tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize(
    "signum, when",
    [(signal.SIGTERM, "training"), (signal.SIGTERM, "setting up"), (signal.SIGINT, "training")],
    ids=["sigterm-training", "sigterm-setting-up", "ctrl-c-training"],
)
def test_an_interrupted_sweep_exits_non_zero_and_reports_the_jobs_that_never_ran(
    tmp_path, text_path, signum, when
):
    proc = start_sweep(tmp_path, text_path)
    try:
        job = None

        def job_started() -> bool:
            nonlocal job
            found = list((tmp_path / "runs" / "stop").glob("*/0/result.json"))
            job = found[0].parent if found else None
            return job is not None and json.loads(found[0].read_text())["status"] == "running"

        # "setting up": job 0's record exists and it is building its data and model, most likely not
        # yet in Lightning's fit and its SIGTERM handling; the sweep must end the same either way
        wait_until(job_started, "job 0 starting", proc)
        if when == "training":
            wait_until((job / "checkpoints" / "last.ckpt").is_file, "job 0 reaching step 10", proc)
        proc.send_signal(signum)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = (tmp_path / "stderr.txt").read_text()
    # as a shell reports a process ended by the signal: 143 for SIGTERM, 130 for Ctrl-C
    assert proc.returncode == 128 + signum, stderr[-3000:]

    root = job.parent
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["0"]  # jobs 1 and 2 never started
    result = json.loads((job / "result.json").read_text())
    assert result["status"] == "interrupted"
    if when == "training":
        assert result["step"] >= 10

    md = (root / "report.md").read_text()
    assert "3 jobs planned: 1 interrupted, 2 never ran." in md
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert table[2].startswith("| 1 | 0 | 1 |") and table[2].endswith("| interrupted |")  # job 0, seed=1
    assert [line.endswith("| never ran |") for line in table[3:]] == [True, True]
    never_ran = md.split("## Never ran")[1]
    assert "- `1: seed=2`" in never_ran and "- `2: seed=3`" in never_ran and "seed=1" not in never_ran
    rows = {r["job"]: r for r in read_csv(root / "report.csv")}
    assert rows["0"]["status"] == "interrupted" and rows["0"]["seed"] == "1"
    assert (rows["1"]["status"], rows["1"]["seed"]) == ("never_ran", "2")
    assert (rows["2"]["status"], rows["2"]["seed"]) == ("never_ran", "3")
    assert "seed=3" in rows["2"]["overrides"]  # the command line that runs it alone
    assert json.loads((root / "sweep.json").read_text())["ended"] is True
    assert f"{root.name}/report.md" in stderr.split("sweep report: ")[-1]  # says where the report is


# --- the report, on job folders written here ---


def fake_job(root: Path, name: str, overrides: list[str], status: str = "completed", **result) -> Path:
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), job / ".hydra" / "overrides.yaml")
    if status:
        Result(status=status, overrides=overrides, **result).write(job)
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


def test_t_quantiles_match_the_tables_and_scipy():
    # the 95% two-sided values printed in every t table, then SciPy's where it is installed (the sweep
    # extra's Optuna brings it)
    for df, expected in ((1, 12.7062047), (2, 4.3026527), (3, 3.1824463), (9, 2.2621572), (30, 2.0422725)):
        assert student_t_quantile(0.975, df) == pytest.approx(expected, rel=1e-7)
    assert student_t_quantile(0.975, 10**6) == pytest.approx(1.959966, rel=1e-5)  # the normal's
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 5, 17, 120):
        for p in (0.6, 0.9, 0.995, 0.99995):
            assert student_t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9)
    with pytest.raises(ValueError, match="0.5 < p < 1"):
        student_t_quantile(0.25, 3)


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
        Result(status="completed").write(target)
    with pytest.raises(SystemExit) as exit_:
        report_main([str(target)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "runs/<experiment>/multirun_<time>" in err
    assert ("single run's folder" in err) == (make == "single_run")
    assert not (target / "report.md").exists()


def plan_file(root: Path, **fields) -> None:
    Plan(host=socket.gethostname(), **fields).save(root)


def test_report_names_the_planned_grid_jobs_that_never_ran(tmp_path, capsys):
    jobs = [["model.n_layer=1", f"seed={seed}"] for seed in (1, 2, 3, 4)]
    plan_file(tmp_path, jobs=jobs, pid=2**22 + 7, ended=True)
    fake_job(tmp_path, "0", jobs[0], best_val_loss=2.0, step=40)
    fake_job(tmp_path, "1", jobs[1], status="interrupted", error="interrupted by SIGTERM", step=12)
    fake_job(tmp_path, "2", jobs[2], status=None)  # set up by Hydra, stopped before its record began
    # no folder for job 3

    assert report_main([str(tmp_path)]) == 0
    printed = capsys.readouterr().out  # nanogpt-report prints the report it writes
    md = (tmp_path / "report.md").read_text()
    assert md in printed
    assert "4 jobs planned: 1 completed, 1 interrupted, 2 never ran." in md
    assert "## Interrupted jobs" in md and "- `1: seed=2` (interrupted): interrupted by SIGTERM" in md
    never_ran = md.split("## Never ran")[1]
    assert "- `2: seed=3`" in never_ran and "- `3: seed=4`" in never_ran
    rows = read_csv(tmp_path / "report.csv")
    assert [(r["rank"], r["job"], r["seed"], r["status"]) for r in rows] == [
        ("1", "0", "1", "completed"),
        ("2", "1", "2", "interrupted"),
        ("", "2", "3", "never_ran"),
        ("", "3", "4", "never_ran"),
    ]
    assert rows[3]["overrides"] == "model.n_layer=1 seed=4"


def test_report_of_a_running_sweep_says_its_jobs_are_still_to_run(tmp_path):
    jobs = [[f"seed={seed}"] for seed in (1, 2)]
    plan_file(tmp_path, jobs=jobs, pid=os.getpid())  # the sweep's process is alive, not ended
    fake_job(tmp_path, "0", jobs[0], best_val_loss=2.0)
    write_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "2 jobs planned: 1 completed, 1 still to run." in md and "never ran" not in md
    assert "## Still to run" in md and "- `1: seed=2`" in md


def test_report_counts_the_optuna_trials_that_never_ran(tmp_path):
    # two trials of an earlier command, then this command's 5 trials, of which two started
    fake_job(tmp_path, "2026-01-01_10-00-00_0", ["optimizer.lr=0.001"], best_val_loss=2.0)
    fake_job(tmp_path, "2026-01-01_10-00-00_1", ["optimizer.lr=0.002"], best_val_loss=1.9)
    earlier = ["2026-01-01_10-00-00_0", "2026-01-01_10-00-00_1"]
    plan_file(tmp_path, trials=5, earlier_jobs=earlier, pid=2**22 + 7, ended=True)
    fake_job(tmp_path, "2026-01-02_10-00-00_0", ["optimizer.lr=0.003"], best_val_loss=1.8)
    fake_job(tmp_path, "2026-01-02_10-00-00_1", ["optimizer.lr=0.0005"], status="interrupted")

    write_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "7 jobs planned: 3 completed, 1 interrupted, 3 never ran." in md
    assert "3 of 5 trials never ran" in md
    assert len(read_csv(tmp_path / "report.csv")) == 4  # a trial that never ran has no parameters to list


def test_the_sweep_plan_is_hydras_job_order(tmp_path):
    config = OmegaConf.create(
        {
            "hydra": {
                "sweeper": {
                    "_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                    "params": {"model.n_layer": "1,2"},
                },
                "overrides": {"task": ["seed=1,2", "name=x"]},
                "sweep": {"dir": str(tmp_path)},
            }
        }
    )
    plan = plan_sweep(config, sweep_overrides(config))
    # the params first, the command line after, and the last override varies fastest (job 1 is seed=2)
    assert plan.jobs == [
        ["model.n_layer=1", "seed=1", "name=x"],
        ["model.n_layer=1", "seed=2", "name=x"],
        ["model.n_layer=2", "seed=1", "name=x"],
        ["model.n_layer=2", "seed=2", "name=x"],
    ]
    assert plan.pid == os.getpid() and not plan.ended

    config.hydra.sweeper = {
        "_target_": "hydra_plugins.nanogpt_sweeper.optuna_sweeper.OptunaSweeper",
        "n_trials": 7,
    }
    fake_job(tmp_path, "earlier_0", ["seed=1"])
    plan = plan_sweep(config, sweep_overrides(config))
    assert (plan.jobs, plan.trials, plan.earlier_jobs) == (None, 7, ["earlier_0"])


def test_a_job_that_fails_before_its_record_is_reported_failed_with_its_error(tmp_path):
    # Hydra made the folder; the job failed before its RunRecord wrote result.json
    job = fake_job(tmp_path, "0", ["seed=1"], status=None)
    hydra = {"mode": RunMode.MULTIRUN, "sweep": {"dir": str(tmp_path)}, "runtime": {"output_dir": str(job)}}
    config = OmegaConf.create({"hydra": hydra})
    plan_file(tmp_path, jobs=[["seed=1"]], pid=os.getpid())
    failed = JobReturn(status=JobStatus.FAILED, overrides=["seed=1"])
    failed.return_value = ValueError("data.batch_size must be a positive integer")
    SweepCallback().on_job_end(config, failed)
    (found,) = find_jobs(tmp_path)
    assert (found.name, found.status) == ("0", "failed")
    assert found.error == "ValueError: data.batch_size must be a positive integer"
    assert "1 jobs planned: 1 failed." in (tmp_path / "report.md").read_text()


def test_the_report_after_a_job_redraws_its_plots_at_most_once_a_minute_and_always_at_the_end(tmp_path):
    jobs = [[f"seed={seed}"] for seed in (1, 2)]
    plan_file(tmp_path, jobs=jobs, pid=os.getpid())
    hydra = {"mode": RunMode.MULTIRUN, "sweep": {"dir": str(tmp_path)}}
    config = OmegaConf.create({"hydra": hydra})
    done = JobReturn(status=JobStatus.COMPLETED)
    callback = SweepCallback()
    fake_job(tmp_path, "0", jobs[0], best_val_loss=2.0)
    callback.on_job_end(config, done)
    assert (tmp_path / "val_loss.png").is_file()  # the first job's report has its plot
    (tmp_path / "val_loss.png").unlink()
    fake_job(tmp_path, "1", jobs[1], best_val_loss=1.9)
    callback.on_job_end(config, done)
    assert "2 jobs planned: 2 completed." in (tmp_path / "report.md").read_text()  # the text is current
    assert not (tmp_path / "val_loss.png").exists()  # the plot waits, a second job within the minute
    callback.on_multirun_end(config)
    assert (tmp_path / "val_loss.png").is_file()


def test_val_loss_against_training_time_is_drawn_per_recipe(tmp_path):
    from nanogpt.runs.plots import plot_against_time

    curves = {
        "recipe a": [[(10.0, 2.0), (20.0, 1.9)], [(11.0, 2.1), (21.0, 1.95)]],
        "recipe b": [[(9.0, 1.8)]],
    }
    assert_png(plot_against_time(curves, tmp_path / "val_loss_vs_time.png", title="two recipes"))


def test_a_damaged_record_is_listed_as_failed_naming_what_is_wrong(tmp_path):
    fake_job(tmp_path, "0", ["seed=1"], best_val_loss=2.0)
    job = fake_job(tmp_path, "1", ["seed=2"], status=None)
    (job / "result.json").write_text('{"status": "completed", "step": "ten"}')  # edited by hand
    jobs = {j.name: j for j in find_jobs(tmp_path)}
    assert jobs["0"].scored and jobs["0"].best_val_loss == 2.0
    assert jobs["1"].status == "failed" and jobs["1"].overrides == ["seed=2"]
    assert "unreadable record" in jobs["1"].error and "step is 'ten', not an integer" in jobs["1"].error
    # a completed job whose record was cut short (a full disk, a copy interrupted) names the file,
    # not a killed or out-of-memory job
    text = fake_job(tmp_path, "2", ["seed=3"], best_val_loss=1.5).joinpath("result.json").read_text()
    (tmp_path / "2" / "result.json").write_text(text[: len(text) // 2])
    cut = {j.name: j for j in find_jobs(tmp_path)}["2"]
    assert cut.status == "failed" and "killed" not in cut.error
    assert f"{tmp_path / '2' / 'result.json'} is not JSON" in cut.error and "cut short" in cut.error


def test_a_grid_rerun_in_an_earlier_sweeps_folder_is_refused_before_hydra_writes_into_its_jobs(tmp_path):
    from nanogpt.sweeps.callback import check_grid_folders_free

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        config = compose(config_name="train", return_hydra_config=True)
        with open_dict(config):
            config.hydra.overrides.task = ["seed=1,2"]
            config.hydra.sweep.dir = str(tmp_path)
        fake_job(tmp_path, "5", ["seed=9"])  # an Optuna trial's number, say: not one of this grid's
        check_grid_folders_free(config)
        job = fake_job(tmp_path, "1", ["seed=2"])
        before = {p: p.read_bytes() for p in job.rglob("*") if p.is_file()}
        with pytest.raises(SystemExit, match=rf"Error: {tmp_path} already holds the job folders 1 of"):
            SweepCallback().on_multirun_start(config)
    assert {p: p.read_bytes() for p in job.rglob("*") if p.is_file()} == before
    assert not (tmp_path / "sweep.json").exists()  # refused before the plan was written
