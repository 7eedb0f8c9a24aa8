"""The report of an ablation: each configuration's difference from a baseline with Welch's interval, its
wall time and parameter count, and val/loss against wall time; on sweep folders the tests write, laid
out as ``nanogpt-train -m`` lays them out (no training here). And ``--dashboard``: optuna-dashboard on an
Optuna search's study, made here with Optuna's ask/tell API."""

from __future__ import annotations

import json
import math
import signal
import socket
import sys
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from nanogpt.cli.report import main as report_main
from nanogpt.model import GPT, GPTConfig
from nanogpt.runs.folder import Result, RunDir
from nanogpt.runs.jobs import load_job, val_against_time
from nanogpt.runs.plan import Plan
from nanogpt.runs.stats import ConfigStats, welch_ci
from nanogpt.sweeps.dashboard import study_storage
from nanogpt.training.record import RunRecord

from .helpers import read_csv, start, wait_until

# the CPU recipe's model (configs/experiment/shakespeare_char_cpu_tuned.yaml), as config.yaml saves it
MODEL = {
    "block_size": 64,
    "vocab_size": 65,
    "n_layer": 4,
    "n_head": 4,
    "n_embd": 128,
    "dropout": 0.0,
    "bias": False,
    "tie_weights": True,
    "gelu_approximate": "none",
    "position": "learned",
    "rope_base": 10000.0,
    "norm": "layernorm",
    "norm_gain": True,
    "qk_norm": False,
    "mlp": "gelu",
    "n_kv_head": None,
    "logit_softcap": None,
}
ABLATIONS = {"gpt2": {}, "rope": {"position": "rope"}, "swiglu": {"mlp": "swiglu"}}
# best val/loss by ablation, seeds 1, 2, 3: rope is better beyond doubt, swiglu too noisy to tell
LOSSES = {"gpt2": [2.00, 2.04, 1.98], "rope": [1.90, 1.92, 1.91], "swiglu": [2.10, 1.90, 2.30]}
WALL = {"gpt2": 100.0, "rope": 90.0, "swiglu": 110.0}  # plus the seed, in seconds
COMMON = [
    "experiment=shakespeare_char_cpu_tuned",
    "name=ablation",
    "data.eval_batches=null",
    "callbacks.bleu=null",
]
METRICS_HEADER = (
    "lr,perf/step_ms,perf/tokens_per_s,perf/train_s,step,train/grad_norm,train/loss,val/bpc,val/loss,val/ppl"
)


def true_parameters(model: dict) -> int:
    """Counted on a real model, apart from the record's meta-device count: torch lists a tied weight once."""
    return sum(p.numel() for p in GPT(GPTConfig(**model)).parameters())


def write_metrics(job: Path, val: list[tuple[int, float]], seconds_per_step: float, every: int = 10) -> None:
    """``csv/metrics.csv`` as Lightning's CSVLogger writes it: a row per logging step, one per validation."""
    last = max(step for step, _ in val)
    rows = [METRICS_HEADER]
    for step in range(every, last + 1, every):
        rows.append(f"0.006,50.0,15000.0,{step * seconds_per_step},{step},1.0,3.0,,,")
        rows += [f",,,,{s},,,{v * 1.44},{v},{math.exp(v)}" for s, v in val if s == step]
    rows += [f",,,,{s},,,{v * 1.44},{v},{math.exp(v)}" for s, v in val if s % every]  # off the logging steps
    (job / "csv").mkdir(parents=True)
    (job / "csv" / "metrics.csv").write_text("\n".join(rows) + "\n")


def write_job(
    root: Path,
    name: str,
    overrides: list[str],
    model: dict,
    best: float,
    wall: float,
    record_parameters: bool = True,
) -> Path:
    """One completed job folder: .hydra/overrides.yaml, config.yaml, result.json, csv/metrics.csv."""
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), job / ".hydra" / "overrides.yaml")
    seed = int(next(o for o in overrides if o.startswith("seed=")).split("=")[1])
    OmegaConf.save(OmegaConf.create({"name": "ablation", "seed": seed, "model": model}), job / "config.yaml")
    val = [(20, best + 0.3), (40, best)]
    write_metrics(job, val, seconds_per_step=wall / 40)
    Result(
        status="completed",
        name="ablation",
        overrides=overrides,
        seed=seed,
        host=socket.gethostname(),
        pid=2**22 + 7,
        started="2026-12-02T15:33:35",
        step=40,
        parameters=true_parameters(model) if record_parameters else None,
        wall_time_s=wall,
        best_val_loss=best,
        best_ckpt=str(job / "checkpoints" / "best.ckpt"),
        metrics={"val/loss": best, "train/loss": best - 0.1},
        history={"val/loss": [list(p) for p in val]},
    ).write(job)
    return job


@pytest.fixture
def ablation(tmp_path: Path) -> Path:
    """A finished `nanogpt-train -m seed=1,2,3 ... ablation=gpt2,rope,swiglu`, numbered as Hydra does."""
    jobs = [
        [f"seed={seed}", COMMON[0], f"ablation={a}", *COMMON[1:]] for seed in (1, 2, 3) for a in ABLATIONS
    ]
    Plan(jobs=jobs, host=socket.gethostname(), pid=2**22 + 7, ended=True).save(tmp_path)
    for i, overrides in enumerate(jobs):
        seed, which = int(overrides[0].split("=")[1]), overrides[2].split("=")[1]
        model = {**MODEL, **ABLATIONS[which]}
        write_job(tmp_path, str(i), overrides, model, LOSSES[which][seed - 1], WALL[which] + seed)
    return tmp_path


def by_ablation(sweep: Path) -> dict[str, dict[str, str]]:
    return {row["ablation"]: row for row in read_csv(sweep / "seeds.csv")}


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_configuration_gets_its_difference_from_the_first_listed_with_welchs_interval(ablation, capsys):
    assert report_main([str(ablation)]) == 0
    rows = by_ablation(ablation)
    # Welch's t-interval by SciPy 1.17, ttest_ind(x, gpt2, equal_var=False).confidence_interval(0.95)
    expected = {
        "rope": (-0.0966666667, 0.0678610200, 2.4237074401),
        "swiglu": (0.0933333333, 0.4817262099, 2.0932825462),
    }
    for which, (diff, half, df) in expected.items():
        row = rows[which]
        assert row["baseline"] == "ablation=gpt2"
        assert float(row["diff"]) == pytest.approx(diff, abs=1e-9)
        assert float(row["diff_ci95_half_width"]) == pytest.approx(half, rel=1e-8)
        assert float(row["diff_df"]) == pytest.approx(df, rel=1e-8)
        assert float(row["diff_low"]) == pytest.approx(diff - half, rel=1e-8)
    assert float(rows["gpt2"]["diff"]) == 0.0
    scipy_stats = pytest.importorskip("scipy.stats")
    for which in expected:  # and SciPy itself, where installed
        test = scipy_stats.ttest_ind(LOSSES[which], LOSSES["gpt2"], equal_var=False)
        assert float(rows[which]["diff_high"]) == pytest.approx(test.confidence_interval(0.95).high, rel=1e-8)

    # mean wall time and parameter count per configuration
    assert float(rows["rope"]["mean_wall_time_s"]) == pytest.approx(92.0)
    for which, change in ABLATIONS.items():
        assert int(rows[which]["parameters"]) == true_parameters({**MODEL, **change})
    # RoPE has no position table: 64 positions x 128 channels fewer
    assert int(rows["gpt2"]["parameters"]) - int(rows["rope"]["parameters"]) == 64 * 128

    md = (ablation / "report.md").read_text()
    assert (
        "| ablation | seeds | mean ± 95% CI | low | high | std | Δ vs ablation=gpt2 ± 95% CI (Welch) |" in md
    )
    assert "`ablation=gpt2` (by default the first value the sweep lists" in md
    assert "--baseline ablation=<value>" in md  # how to choose another
    assert "| rope | 3 | 1.9100 ± 0.0248 |" in md and "| **-0.0967 ± 0.0679** | 92.0 | 795,904 |" in md
    assert "| +0.0933 ± 0.4817 |" in md  # not bold: the interval holds 0
    assert "| baseline | 102.0 | 804,096 |" in md
    assert "![val/loss against wall time, per configuration](val_loss_vs_time.png)" in md
    assert_png(ablation / "val_loss_vs_time.png")
    assert "val_loss_vs_time.png" in capsys.readouterr().out  # listed as written


def test_the_baseline_flag_picks_the_configuration_to_compare_with(ablation):
    assert report_main([str(ablation), "--baseline", "ablation=rope"]) == 0
    rows = by_ablation(ablation)
    assert {r["baseline"] for r in rows.values()} == {"ablation=rope"}
    assert float(rows["rope"]["diff"]) == 0.0
    assert float(rows["gpt2"]["diff"]) == pytest.approx(0.0966666667)
    # SciPy 1.17: ttest_ind(swiglu, rope, equal_var=False).confidence_interval(0.95)
    assert float(rows["swiglu"]["diff_ci95_half_width"]) == pytest.approx(0.4950840706, rel=1e-8)
    md = (ablation / "report.md").read_text()
    assert "Δ vs ablation=rope ± 95% CI (Welch)" in md and "`ablation=rope` (named with --baseline)" in md


CHOICES = "choose one of ablation=gpt2, ablation=rope, ablation=swiglu"


@pytest.mark.parametrize(
    "baseline,says",
    [
        (
            "ablation=gpt3",
            f"no job of the sweep has ablation=gpt3; {CHOICES}",
        ),
        (
            "model=gpt2",
            f"model is not an override the sweep varies; {CHOICES}",
        ),
        ("seed=1", "seed is what each configuration averages over; choose one of ablation=gpt2"),
        (
            "gpt2",
            f"--baseline gpt2 is not KEY=VALUE; {CHOICES}",
        ),
    ],
)
def test_a_bad_baseline_names_the_valid_choices(ablation, capsys, baseline, says):
    with pytest.raises(SystemExit) as stop:
        report_main([str(ablation), "--baseline", baseline])
    assert stop.value.code == 2
    assert says in capsys.readouterr().err
    assert not (ablation / "report.md").exists()  # nothing written under a wrong baseline


def test_in_a_grid_each_configuration_is_compared_at_its_own_other_values(tmp_path):
    # ablation x lr, 2 seeds: rope at lr=3e-3 is compared with gpt2 at lr=3e-3
    losses = {
        ("gpt2", "1e-3"): [2.0, 2.1],
        ("rope", "1e-3"): [1.9, 2.0],
        ("gpt2", "3e-3"): [1.8, 1.9],
        ("rope", "3e-3"): [1.5, 1.7],
    }
    for i, ((which, lr), values) in enumerate(losses.items()):
        for seed, best in enumerate(values, 1):
            overrides = [f"seed={seed}", f"ablation={which}", f"optimizer.lr={lr}"]
            write_job(tmp_path, f"{i * 2 + seed - 1}", overrides, {**MODEL, **ABLATIONS[which]}, best, 50.0)
    assert report_main([str(tmp_path), "--baseline", "ablation=gpt2"]) == 0
    rows = {(r["ablation"], r["optimizer.lr"]): r for r in read_csv(tmp_path / "seeds.csv")}
    assert rows[("rope", "3e-3")]["baseline"] == "ablation=gpt2 optimizer.lr=3e-3"
    assert float(rows[("rope", "3e-3")]["diff"]) == pytest.approx(1.6 - 1.85)
    assert float(rows[("rope", "1e-3")]["diff"]) == pytest.approx(1.95 - 2.05)
    # the same numbers, as 0.003: one configuration to a reader
    assert report_main([str(tmp_path), "--baseline", "optimizer.lr=0.003"]) == 0
    rows = {(r["ablation"], r["optimizer.lr"]): r for r in read_csv(tmp_path / "seeds.csv")}
    assert rows[("gpt2", "1e-3")]["baseline"] == "ablation=gpt2 optimizer.lr=3e-3"


def test_welch_interval_without_spread_or_with_one_seed():
    one = ConfigStats({"ablation": "rope"}, 1, 1.9, math.nan, math.nan)
    flat = ConfigStats({"ablation": "gpt2"}, 3, 2.0, 0.0, 0.0)
    diff, half, _ = welch_ci(one, flat)
    assert diff == pytest.approx(-0.1) and math.isnan(half)  # one seed: no interval
    assert welch_ci(flat, flat)[:2] == (0.0, 0.0)  # deterministic runs: the difference is exact


def test_val_loss_against_time_comes_from_metrics_csv_interpolated_between_logging_steps(tmp_path):
    job = tmp_path / "0"
    write_metrics(job, [(20, 2.5), (25, 2.4), (40, 2.0)], seconds_per_step=0.5)
    # steps 20 and 40 are timed (10 s, 20 s); step 25 lies between the timed steps 20 and 30
    assert val_against_time(job) == [(10.0, 2.5), (20.0, 2.0), (12.5, 2.4)]
    assert val_against_time(tmp_path / "no-csv-logger") == []


def test_the_record_counts_the_models_parameters_and_old_records_still_read(tmp_path):
    model = {**MODEL, "init_from": None}  # config.yaml's model section also says where weights start
    # what the record reads of a run's spec: its derived config and its model config
    spec = SimpleNamespace(cfg=OmegaConf.create({"seed": 1, "model": model}), model=GPTConfig(**MODEL))
    run = RunDir.at(tmp_path / "run")
    with RunRecord(run, "ablation", 1) as record:
        record.save_config(spec)
    saved = json.loads(run.result_file.read_text())
    assert saved["parameters"] == true_parameters(MODEL) == 804_096

    # a result.json from before the count: still read, and the report counts from its config.yaml
    del saved["parameters"]
    saved.update(status="completed", best_val_loss=2.0, step=40)
    run.result_file.write_text(json.dumps(saved))
    assert Result.read(run.path).parameters is None
    assert load_job(run.path).parameters == 804_096
    (run.path / "config.yaml").unlink()
    assert load_job(run.path).parameters is None  # nothing to count from: the column stays empty


def test_jobs_of_another_sweep_of_the_study_join_the_report(ablation, tmp_path_factory):
    # the seed-3 jobs ran as a second command (e.g. on another machine): the first sweep stopped after
    # seed 2, and its plan still lists seed 3's jobs
    other = tmp_path_factory.mktemp("more") / "seed3"
    other.mkdir()
    for job in [p for p in ablation.iterdir() if p.is_dir() and int(p.name) >= 2 * len(ABLATIONS)]:
        job.rename(other / job.name)
    assert report_main([str(ablation)]) == 0
    assert "never ran" in (ablation / "report.md").read_text()
    assert report_main([str(ablation), "--add", str(other)]) == 0
    report = (ablation / "report.md").read_text()
    assert "never ran" not in report and "seed3/6" in report
    rows = by_ablation(ablation)
    assert {a: int(r["n"]) for a, r in rows.items()} == {a: 3 for a in ABLATIONS}
    assert float(rows["rope"]["mean"]) == pytest.approx(sum(LOSSES["rope"]) / 3)
    assert not (other / "report.md").exists()  # written into the first folder only


def make_study(sweep: Path, storage: str, name: str = "cpu_optim", trials: int = 3) -> None:
    """An Optuna search's study as the sweeper leaves it: ``trials`` trials asked and told."""
    import optuna

    from nanogpt.sweeps.study import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=open_storage(storage))
    for _ in range(trials):
        trial = study.ask({"optimizer.lr": optuna.distributions.FloatDistribution(1e-3, 1e-2, log=True)})
        study.tell(trial, 2.0 - 10 * trial.params["optimizer.lr"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return json.load(answer)
    except OSError:  # not listening yet
        return None


def test_the_dashboard_serves_the_searchs_study_over_http(tmp_path):
    pytest.importorskip("optuna_dashboard")
    sweep = tmp_path / "runs" / "p" / "optuna_cpu_optim"
    make_study(sweep, f"sqlite:///{sweep}/optuna.db")
    port = free_port()
    exe = Path(sys.executable).with_name("nanogpt-report")
    proc = start([str(exe), "--dashboard", str(sweep), "--port", str(port)], cwd=tmp_path)
    try:
        api = f"http://127.0.0.1:{port}/api/studies"
        studies = wait_until(lambda: get_json(api), "optuna-dashboard answering", proc, timeout=120)
        [summary] = studies["study_summaries"]
        assert summary["study_name"] == "cpu_optim"
        study = get_json(f"{api}/{summary['study_id']}")
        assert study["name"] == "cpu_optim" and len(study["trials"]) == 3
        assert f"open http://127.0.0.1:{port}/" in (tmp_path / "stdout.txt").read_text()
        # SIGTERM, not Ctrl-C: wsgiref's handler swallows a KeyboardInterrupt that lands while it still
        # finishes a request, and the server would go on
        proc.terminate()
        assert proc.wait(timeout=30) == -signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_dashboard_finds_the_study_the_jobs_record(tmp_path):
    sweep = tmp_path / "optuna_cpu_optim"
    sweep.mkdir()
    (sweep / "optuna.log").touch()
    assert study_storage(sweep) == f"journal:///{sweep / 'optuna.log'}"
    (sweep / "optuna.db").touch()
    assert study_storage(sweep) == f"sqlite:///{sweep / 'optuna.db'}"

    # the storage elsewhere (hydra.sweeper.storage), as a job's .hydra records it: interpolated
    elsewhere = tmp_path / "shared" / "optuna.log"
    make_study(elsewhere.parent, f"journal:///{elsewhere}")
    sweep = tmp_path / "optuna_on_nfs"
    (sweep / "0" / ".hydra").mkdir(parents=True)
    OmegaConf.save(
        OmegaConf.create({"paths": {"shared": str(elsewhere.parent)}}), sweep / "0/.hydra/config.yaml"
    )
    hydra = {"hydra": {"sweeper": {"storage": "journal:///${paths.shared}/optuna.log"}}}
    OmegaConf.save(OmegaConf.create(hydra), sweep / "0/.hydra/hydra.yaml")
    assert study_storage(sweep) == f"journal:///{elsewhere}"


def test_the_dashboard_names_the_fix_without_a_study_or_without_optuna_dashboard(
    tmp_path, capsys, monkeypatch
):
    with pytest.raises(SystemExit) as exit:
        report_main(["--dashboard", str(tmp_path)])
    assert exit.value.code == 2
    assert "holds no Optuna study" in capsys.readouterr().err
    (tmp_path / "optuna.db").touch()
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # as if not installed: its import fails
    with pytest.raises(SystemExit):
        report_main(["--dashboard", str(tmp_path)])
    assert 'pip install -e ".[sweep]"' in capsys.readouterr().err
