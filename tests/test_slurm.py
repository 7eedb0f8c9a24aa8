"""SLURM through Hydra's submitit launcher (the [slurm] extra): each sweep job is a job of its own.

``hydra/launcher=submitit_local`` runs here for real: every job in a process that submitit starts.
``hydra/launcher=submitit_slurm`` cannot run without a cluster, so its tests stop at ``sbatch``: they
check the settings that matter reach the batch script, and that the sweep's pre-check lets a
multi-machine job through to it.
"""

import json
import os

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from nanogpt import CONFIG_DIR
from nanogpt.sweeps.callback import launches_on_cluster

from .helpers import SWEEP, read_csv, run_cli, sweep, sweep_dirs

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

# no BLEU: generation is the slowest part of these 10-step jobs, and nothing here is about it
QUICK = [a for a in SWEEP if not a.startswith("callbacks.bleu.")] + ["callbacks.bleu=null"]


def compose_with_hydra(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


@pytest.mark.slow  # a sweep and a process per job
def test_submitit_local_runs_every_job_in_its_own_process_and_reports_them(tmp_path, text_path):
    result = sweep(
        tmp_path,
        text_path,
        "name=local",
        "hydra/launcher=submitit_local",
        # a stuck job is killed in minutes, not the default hour
        "hydra.launcher.timeout_min=5",
        "optimizer.lr=1e-3,3e-3",
        base=QUICK,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (root,) = sweep_dirs(tmp_path, "local")
    plan = json.loads((root / "sweep.json").read_text())
    lrs = {}
    for job in ("0", "1"):
        saved = json.loads((root / job / "result.json").read_text())
        assert saved["status"] == "completed" and saved["step"] == 10
        assert saved["pid"] != plan["pid"]  # trained in submitit's process, not in the sweep's
        assert (root / job / "checkpoints" / "best.ckpt").is_file()
        assert (root / job / "checkpoints" / "last.ckpt").is_file()
        lrs[job] = yaml.safe_load((root / job / "config.yaml").read_text())["optimizer"]["lr"]
    assert lrs == {"0": 1e-3, "1": 3e-3}

    rows = read_csv(root / "report.csv")
    assert sorted((r["job"], float(r["optimizer.lr"]), r["status"]) for r in rows) == [
        ("0", 1e-3, "completed"),
        ("1", 3e-3, "completed"),
    ]
    # submitit's own logs and pickles stay in the sweep folder (hydra.launcher.submitit_folder)
    results = sorted((root / ".submitit").glob("*/*_result.pkl"))
    assert len(results) == 2
    assert all((p.parent / p.name.replace("_result.pkl", "_log.out")).is_file() for p in results)


def test_submitit_slurm_composes_and_its_settings_that_matter_are_settable():
    cfg = compose_with_hydra(
        [
            "hydra/launcher=submitit_slurm",
            "trainer=ddp",
            "trainer.num_nodes=2",
            "hydra.launcher.nodes=2",
            "hydra.launcher.tasks_per_node=8",
            "hydra.launcher.gpus_per_node=8",
            "hydra.launcher.timeout_min=240",
            "hydra.launcher.partition=gpu",
            "+hydra.launcher.additional_parameters.requeue=true",
            "+hydra.launcher.additional_parameters.signal=USR1@90",
        ]
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 8, 8)
    assert launcher.timeout_min == 240 and launcher.partition == "gpu"
    assert launcher.additional_parameters == {"requeue": True, "signal": "USR1@90"}
    # submitit's own resubmission on timeout stays off unless asked for (see the README)
    assert launcher.max_num_timeout == 0
    assert launches_on_cluster(cfg)


def test_only_the_slurm_launcher_counts_as_a_cluster_launcher():
    assert not launches_on_cluster(compose_with_hydra([]))  # Hydra's basic launcher
    # submitit_local starts its jobs on this machine, so the sweep's checks of trainers still apply
    assert not launches_on_cluster(compose_with_hydra(["hydra/launcher=submitit_local"]))


FAKE_SBATCH = """#!/bin/sh
# a stand-in for SLURM's sbatch: keep the batch script it was given, and refuse to queue it
cp "$1" "$FAKE_SBATCH_SCRIPT"
echo "sbatch: error: no SLURM here (test stand-in)" >&2
exit 1
"""


@pytest.mark.slow  # a sweep process
def test_a_two_machine_sweep_goes_to_sbatch_with_the_settings_that_matter(tmp_path, text_path):
    # submitit looks for srun before it submits, and calls sbatch; both are stand-ins here
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in {"sbatch": FAKE_SBATCH, "srun": "#!/bin/sh\nexit 1\n"}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    script = tmp_path / "job.sh"
    command = [
        "-m",
        *QUICK,
        f"data.path={text_path}",
        "name=slurm",
        # two machines of 2 CPU ranks each: refused under the basic launcher (test_sweep.py)
        "trainer=ddp_cpu",
        "trainer.num_nodes=2",
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.nodes=2",
        "hydra.launcher.tasks_per_node=2",
        "hydra.launcher.gpus_per_node=8",
        "hydra.launcher.timeout_min=30",
        "+hydra.launcher.additional_parameters.requeue=true",
        "+hydra.launcher.additional_parameters.signal=USR1@90",
        "optimizer.lr=1e-3,3e-3",
    ]
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_SBATCH_SCRIPT": str(script)}
    result = run_cli("nanogpt-train", command, cwd=tmp_path, env=env)

    assert "checked before the first job" not in result.stderr  # the pre-check let it through
    assert result.returncode != 0 and "no SLURM here" in result.stderr, result.stderr[-3000:]
    sbatch = [line for line in script.read_text().splitlines() if line.startswith("#SBATCH --")]
    flags = dict(line.removeprefix("#SBATCH --").partition("=")[::2] for line in sbatch)
    assert flags["nodes"] == "2"
    # SLURM starts the ranks: one task per device, which Lightning's ddp joins (no ddp_spawn)
    assert flags["ntasks-per-node"] == "2"
    assert flags["gpus-per-node"] == "8"
    assert flags["time"] == "30"
    assert flags["requeue"] == ""  # a bare flag
    # the signal Lightning's SLURM auto-requeue listens for, instead of submitit's USR2
    assert flags["signal"] == "USR1@90"
    assert flags["array"] == "0-1%2"  # one SLURM job per sweep job
    # submitit's logs go to the sweep folder, beside the jobs' own folders
    (root,) = sweep_dirs(tmp_path, "slurm")
    assert flags["output"].startswith(f"{root.resolve()}/.submitit/")
