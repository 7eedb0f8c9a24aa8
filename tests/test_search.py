"""Optuna searches (``hparams_search=...``, nanogpt's own Hydra sweeper): a study that resumes and
prunes, its trials on two processes, a search killed mid-trial, and Hydra's sweep syntax read as
Optuna's distributions. (Grid sweeps and the sweep report: test_sweep.py.)"""

import json
import sys
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from nanogpt.runs.jobs import is_job_folder

from .helpers import CPU_SEARCHED_KEYS, SWEEP, TINY, read_csv, run_cli, start, sweep, wait_until
from .helpers.callbacks import PROBE, read_ranks
from .helpers.callbacks import ROOT as PROBE_ROOT

pytest.importorskip("optuna")  # the [sweep] extra, which the README's test command installs


@pytest.mark.slow  # two searches, 4 trials
def test_optuna_sweep_resumes_its_study_and_prunes_trials_that_fall_behind(tmp_path, text_path):
    study = pytest.importorskip("optuna")
    args = [
        "name=search",
        # the CPU recipe's search (warm-ups of 0-200 steps) on 20-step trials of the tiny model: a
        # search cannot draw a warm-up its run refuses, since a run fits a longer one into itself
        "hparams_search=shakespeare_char_cpu_optim",
        "trainer.max_steps=20",
        "hydra.sweeper.n_trials=2",
        "callbacks.bleu=null",
    ]
    # the tiny recipe fixes lr and warm-up, which would take them out of the search
    base = [a for a in SWEEP if not a.startswith(("optimizer.lr=", "scheduler.warmup_steps="))]
    first = sweep(tmp_path, text_path, *args, base=base)
    assert first.returncode == 0, first.stderr[-3000:]
    root = tmp_path / "runs" / "search" / "optuna_cpu_optim"
    storage = f"sqlite:///{root / 'optuna.db'}"
    trials = study.load_study(study_name="cpu_optim", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 2
    # every searched parameter was suggested, and the job that ran used it
    assert set(trials[0].params) == CPU_SEARCHED_KEYS
    for job in job_folders(root):
        record = json.loads((job / "result.json").read_text())
        assert record["status"] == "completed" and record["step"] == 20
        config = OmegaConf.load(job / "config.yaml")
        assert config.scheduler.warmup_steps <= 20  # fitted into the run
        trial = next(t for t in trials if t.value == pytest.approx(record["best_val_loss"]))
        assert config.optimizer.lr == pytest.approx(trial.params["optimizer.lr"])
    # each trial reported val/loss at every validation (steps 5, 10, 15, 20)
    assert all(sorted(t.intermediate_values) == [5, 10, 15, 20] for t in trials)

    # the same command continues the same study; this time a pruner stops every trial that reports a
    # val/loss above 0 from step 6 on: at its validation at step 10, not at its end
    pruner = "hydra.sweeper.pruner={_target_:optuna.pruners.ThresholdPruner,upper:0.0,n_warmup_steps:6}"
    again = sweep(tmp_path, text_path, *args, "hydra.sweeper.n_trials=2", pruner, base=base)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Error executing job" not in again.stderr  # a pruned trial is no failure
    trials = study.load_study(study_name="cpu_optim", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 2 + ["PRUNED"] * 2
    assert [sorted(t.intermediate_values) for t in trials[2:]] == [[5, 10]] * 2

    rows = read_csv(root / "report.csv")
    assert len(rows) == 4
    pruned = [r for r in rows if r["status"] == "pruned"]
    assert len(pruned) == 2 and all(r["steps"] == "10" and r["error"] == "pruned at step 10" for r in pruned)
    for row in pruned:
        record = json.loads((root / row["job"] / "result.json").read_text())
        assert record["status"] == "pruned" and record["error"] == "pruned at step 10"
    # the second command planned 2 trials on top of the first command's 2 job folders
    plan = json.loads((root / "sweep.json").read_text())
    assert plan["trials"] == 2 and len(plan["earlier_jobs"]) == 2 and plan["ended"] is True
    report = (root / "report.md").read_text()
    assert "4 jobs planned: 2 completed, 2 pruned." in report and "| pruned at step 10 |" in report
    best = min(t.value for t in trials if t.value is not None and t.state.name == "COMPLETE")
    assert float(rows[0]["best_val_loss"]) == pytest.approx(best)
    results = OmegaConf.load(root / "optimization_results.yaml")
    assert results.best_value == pytest.approx(best)


@pytest.mark.slow
def test_a_search_killed_mid_trial_resumes_without_losing_or_repeating_a_trial(tmp_path, text_path):
    study = pytest.importorskip("optuna")
    args = [
        "-m",
        *TINY,
        f"data.path={text_path}",
        "paths.root_dir=.",
        "callbacks.bleu=null",
        "name=search",
        "hparams_search=shakespeare_char_cpu_optim",
        "hydra.sweeper.n_trials=2",
        # Optuna's journal file: the storage that jobs on several machines share
        "hydra.sweeper.storage=journal:///${hydra.sweep.dir}/optuna.log",
        # metrics.csv written every step (Lightning's default: every 100), so the first validation
        # shows at step 20
        "+logger.csv.flush_logs_every_n_steps=1",
        # compile=auto would compile a first trial of 100,000 steps, for a minute
        "compile=false",
    ]
    root = tmp_path / "runs" / "search" / "optuna_cpu_optim"
    proc = start(
        [str(Path(sys.executable).with_name("nanogpt-train")), *args, "trainer.max_steps=100000"], tmp_path
    )
    try:
        # the first trial trains (a validation is done) when the sweeper is killed
        wait_until(
            lambda: any(
                "val/loss" in csv.read_text()
                for j in job_folders(root)
                for csv in j.glob("csv/**/metrics.csv")
            ),
            "a validation of the first trial",
            proc,
        )
    finally:
        proc.kill()  # kill -9: the sweeper cannot close its trial
        proc.wait()
    journal = study.storages.JournalStorage(
        study.storages.journal.JournalFileBackend(str(root / "optuna.log"))
    )
    trials = study.load_study(study_name="cpu_optim", storage=journal).trials
    assert [t.state.name for t in trials] == ["RUNNING"]
    killed = trials[0].params

    again = run_cli("nanogpt-train", [*args, "trainer.max_steps=10"], cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "re-running 1 stopped before they finished" in again.stdout + again.stderr
    trials = study.load_study(study_name="cpu_optim", storage=journal).trials
    # the killed trial is closed, its parameters ran again first, once; then the command's next trial
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert trials[1].params == killed and trials[1].user_attrs["retry_of"] == 0
    assert trials[2].params != killed
    rows = read_csv(root / "report.csv")
    assert sorted(r["status"] for r in rows) == ["completed", "completed", "failed"]


def job_folders(root: Path) -> list[Path]:
    """The job folders of a search, in the order they were launched."""
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if is_job_folder(p)), key=lambda p: p.name)


def test_the_search_space_reads_hydras_sweep_syntax_as_optuna_distributions():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from nanogpt.sweeps.study import search_space

    overrides = OverridesParser.create().parse_overrides(
        [
            "optimizer.lr=tag(log, interval(1e-4, 1e-2))",
            "optimizer.weight_decay=interval(0.0, 0.2)",
            "model.n_layer=range(2, 8, 2)",  # Hydra's range stops before 8, as a grid's does
            "model.n_head=tag(int, interval(1, 4))",
            "scheduler.warmup_steps=choice(0, 50)",
            "model.mlp=choice(gelu, swiglu)",
            "seed=3",
            "seed=choice(1, 2)",  # the command line comes last and wins
        ]
    )
    searched, fixed = search_space(overrides)
    assert searched == {
        "optimizer.lr": FloatDistribution(1e-4, 1e-2, log=True),
        "optimizer.weight_decay": FloatDistribution(0.0, 0.2),
        "model.n_layer": IntDistribution(2, 6, step=2),
        "model.n_head": IntDistribution(1, 4),
        "scheduler.warmup_steps": CategoricalDistribution([0, 50]),
        "model.mlp": CategoricalDistribution(["gelu", "swiglu"]),
        "seed": CategoricalDistribution([1, 2]),
    }
    assert fixed == {}
    searched, fixed = search_space(OverridesParser.create().parse_overrides(["seed=choice(1, 2)", "seed=3"]))
    assert searched == {} and fixed == {"seed": "3"}
    with pytest.raises(ValueError, match=r"empty range"):
        search_space(OverridesParser.create().parse_overrides(["model.n_layer=range(4, 2)"]))


@pytest.mark.slow
def test_an_optuna_search_on_two_processes_gives_every_rank_its_trials_parameters(tmp_path, text_path):
    study = pytest.importorskip("optuna")
    base = [a for a in SWEEP if not a.startswith(("optimizer.lr=", "scheduler.warmup_steps="))]
    args = [
        "name=search",
        "hparams_search=shakespeare_optuna",
        "hydra.sweeper.n_trials=2",
        "model.n_embd=choice(32,64)",
        "model.n_layer=choice(1,2)",
        "scheduler.decay_steps=1000",
        "trainer=ddp_cpu",
        "callbacks.bleu=null",
        *PROBE,
    ]
    result = sweep(tmp_path, text_path, *args, base=base, env={"PYTHONPATH": PROBE_ROOT})
    assert result.returncode == 0, result.stderr[-3000:]
    root = tmp_path / "runs" / "search" / "optuna_search"
    trials = study.load_study(study_name="search", storage=f"sqlite:///{root / 'optuna.db'}").trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 2
    assert all(len(t.values) == 1 for t in trials)  # one value per trial, not one per rank
    jobs = sorted(
        (p for p in root.iterdir() if is_job_folder(p)), key=lambda p: int(p.name.rsplit("_", 1)[1])
    )
    assert len(jobs) == 2
    for job, trial in zip(jobs, trials, strict=True):
        ranks = read_ranks(job)
        assert [r["rank"] for r in ranks] == [0, 1]
        for r in ranks:  # both ranks trained with this trial's suggestions
            assert r["lr"] == pytest.approx(trial.params["optimizer.lr"])
            assert r["weight_decay"] == pytest.approx(trial.params["optimizer.weight_decay"])
            assert r["model"]["n_embd"] == trial.params["model.n_embd"]
            assert r["model"]["n_layer"] == trial.params["model.n_layer"]
            assert r["model"]["dropout"] == pytest.approx(trial.params["model.dropout"])
        record = json.loads((job / "result.json").read_text())
        assert trial.value == pytest.approx(record["best_val_loss"])
