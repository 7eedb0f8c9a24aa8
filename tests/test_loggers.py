"""The logger group: W&B (offline, so no account or network is needed), TensorBoard and CSV."""

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from nanogpt.loggers import (
    _online_host_without_credentials,
    _online_host_without_credentials_from_env,
    build_loggers,
    check_wandb_credentials,
    wandb_run_identity,
)
from nanogpt.train import train

from .conftest import TINY, compose_train

FAKE_KEY = "x" * 40  # the shape of a W&B API key; nothing ever checks it with a server


@pytest.fixture
def wandb_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No W&B credentials, no user settings, and every file wandb writes inside this test's folder."""
    import wandb

    wandb.teardown()  # wandb reads its environment once per process; make it read this one
    for name in [k for k in os.environ if k.startswith("WANDB_")] + ["NETRC"]:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # no ~/.netrc, no ~/.config/wandb
    for name in ["WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"]:
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))
    # the system monitor and console capture only cost the test time
    monkeypatch.setenv("WANDB_X_DISABLE_STATS", "true")
    monkeypatch.setenv("WANDB_X_SAVE_REQUIREMENTS", "false")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.setenv("WANDB_SILENT", "true")
    yield home
    wandb.teardown()


def with_logger(cfg: DictConfig, option: str, overrides: dict | None = None) -> DictConfig:
    """``cfg`` named "tiny", with ``logger=<option>`` and ``logger.<key>=<value>`` as on the command line."""
    logger = compose_train([f"logger={option}"]).logger
    with open_dict(cfg):
        cfg.logger = logger
        cfg.name = "tiny"
        for key, value in (overrides or {}).items():
            OmegaConf.update(cfg.logger, key, value)
    return cfg


def shorter(cfg: DictConfig, steps: int = 20, every: int = 10) -> DictConfig:
    with open_dict(cfg):
        cfg.trainer.max_steps = cfg.scheduler.decay_steps = steps
        cfg.trainer.val_check_interval = every
    return cfg


def wandb_records(run_dir: Path) -> list:
    """The records of an offline run's ``run-<id>.wandb`` file, which ``wandb sync`` uploads.

    The file is a LevelDB-style log after a 7-byte ``:W&B`` header: 32 KiB blocks of chunks, each with
    a 7-byte header (checksum, little-endian length, kind: 1 whole, 2 first, 3 middle, 4 last).
    """
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pos, chunks = [], 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # too little room left in the block for a header: padding
            pos += 32768 - pos % 32768
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunks += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            records.append(record)
            chunks = b""
    return records


def _items(updates) -> dict:
    return {u.key or "/".join(u.nested_key): json.loads(u.value_json) for u in updates}


def read_offline_run(run_dir: Path) -> dict:
    """The run record, config, history rows, final summary and artifacts of an offline run."""
    import wandb

    wandb.teardown()  # wandb-core may still be writing the file after run.finish() returns
    run, config, history, summary, artifacts = None, {}, [], {}, []
    for record in wandb_records(run_dir):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
        elif kind == "config":
            config.update(_items(record.config.update))
        elif kind == "history":
            history.append(_items(record.history.item))
        elif kind == "summary":
            summary.update(_items(record.summary.update))
        elif kind == "artifact":
            artifacts.append(record.artifact)
    return {"run": run, "config": config, "history": history, "summary": summary, "artifacts": artifacts}


def csv_column(run: Path, key: str) -> list[tuple[int, float]]:
    with open(run / "csv" / "metrics.csv") as f:
        return [(int(r["step"]), float(r[key])) for r in csv.DictReader(f) if r.get(key)]


def test_offline_run_keeps_metrics_best_summaries_config_and_samples_in_the_run_folder(
    cfg_tiny, wandb_env, monkeypatch
):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)  # a single run, whatever ran before
    cfg = shorter(with_logger(cfg_tiny, "many"))
    with open_dict(cfg):
        cfg.logger.wandb = compose_train(["logger=wandb"]).logger.wandb
        cfg.callbacks.bleu.num_prompts = 4
        cfg.callbacks.bleu.continuation_tokens = 16
    train(cfg)

    out = Path(cfg.paths.output_dir)
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    got = read_offline_run(run_dir)
    assert (got["run"].project, got["run"].run_group, got["run"].display_name) == ("nanogpt", "tiny", "run")
    assert list(got["run"].tags) == ["tiny"]

    # every metric Lightning logged, on the trainer's step axis
    val_loss = csv_column(out, "val/loss")
    logged_val = [(r["trainer/global_step"], r["val/loss"]) for r in got["history"] if "val/loss" in r]
    assert [s for s, _ in logged_val] == [s for s, _ in val_loss] == [9, 19]
    assert [v for _, v in logged_val] == pytest.approx([v for _, v in val_loss])
    logged = set().union(*got["history"])
    assert {"train/loss", "lr", "val/ppl", "val/bpc", "val/bleu"} <= logged
    # the summary holds the best value, not the last one
    assert got["summary"]["val/loss"] == {"min": pytest.approx(min(v for _, v in val_loss))}
    assert set(got["summary"]["val/ppl"]) == set(got["summary"]["val/bpc"]) == {"min"}
    assert set(got["summary"]["val/bleu"]) == {"max"}

    # the whole resolved config, as train() logged it
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert set(resolved) <= set(got["config"])
    assert got["config"]["model"]["n_layer"] == 2 and got["config"]["logger"]["wandb"]["project"] == "nanogpt"

    # the BLEU samples of each validation as a table
    tables = sorted((run_dir / "files" / "media" / "table" / "val").glob("samples_*.table.json"))
    assert len(tables) == len(val_loss)
    table = json.loads(tables[-1].read_text())
    assert table["columns"] == ["step", "prompt", "reference", "continuation"]
    assert len(table["data"]) == cfg.callbacks.bleu.num_prompts
    assert got["summary"]["val/samples/_type"] == "table-file"

    assert not list(wandb_env.rglob("*wandb*")) and not (wandb_env / ".netrc").exists()  # $HOME untouched


def test_offline_flag_needs_no_credentials_and_keeps_the_best_checkpoint_as_an_artifact(cfg_tiny, wandb_env):
    cfg = shorter(with_logger(cfg_tiny, "wandb", {"wandb.offline": True, "wandb.log_model": True}))
    with open_dict(cfg):
        cfg.callbacks.bleu = None
    metrics = train(cfg)

    (run_dir,) = (Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*")
    models = [a for a in read_offline_run(run_dir)["artifacts"] if a.type == "model"]
    (best,) = [a for a in models if "best" in a.aliases]
    assert best.name == f"model-{run_dir.name.rsplit('-', 1)[-1]}"
    assert json.loads(best.metadata)["score"] == pytest.approx(metrics["best_val_loss"])
    (entry,) = best.manifest.contents
    # offline, the artifact's copy of best.ckpt waits in WANDB_DATA_DIR for `wandb sync`
    staged = Path(entry.local_path)
    assert entry.path == "model.ckpt" and staged.is_file()
    assert staged.read_bytes() == Path(metrics["best_ckpt"]).read_bytes()


def test_summary_keeps_the_minimum_and_explicit_group_tags_and_name_win(cfg_tiny, wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = with_logger(
        cfg_tiny, "wandb", {"wandb.group": "ablation", "wandb.tags": ["a", "b"], "wandb.name": "x"}
    )
    (logger,) = build_loggers(cfg)
    run = logger.experiment
    assert (run.group, run.tags, run.name) == ("ablation", ("a", "b"), "x")
    for step, loss in enumerate([2.0, 1.5, 3.0]):
        logger.log_metrics({"val/loss": loss}, step=step)
    logger.finalize("success")

    (run_dir,) = (Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*")
    assert read_offline_run(run_dir)["summary"]["val/loss"] == {"min": 1.5}


def test_online_without_credentials_is_refused_before_wandb_starts(cfg_tiny, wandb_env, monkeypatch):
    import wandb

    def no_network(*args):
        raise AssertionError("tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(wandb, "init", no_network)
    cfg = with_logger(cfg_tiny, "wandb")
    with pytest.raises(ValueError, match=r"no W&B credentials.*`wandb login`.*WANDB_MODE=offline") as err:
        train(cfg)
    assert "logger.wandb.offline=true" in str(err.value) and "WANDB_MODE=disabled" in str(err.value)
    assert not (Path(cfg.paths.output_dir) / "wandb").exists()


@pytest.mark.parametrize(
    "setting",
    [
        "WANDB_API_KEY",
        "netrc",
        "NETRC",
        "WANDB_MODE=offline",
        "WANDB_MODE=dryrun",
        "WANDB_MODE=disabled",
        "WANDB_DISABLED=true",
        "logger.wandb.offline=true",
        "logger.wandb.mode=offline",
    ],
)
def test_credentials_or_an_offline_mode_let_a_run_start(setting, wandb_env, tmp_path, monkeypatch):
    assert _online_host_without_credentials() is not None  # wandb 0.31: api.forge.coreweave.com
    assert _online_host_without_credentials_from_env() == "https://api.wandb.ai"  # older wandb
    with pytest.raises(ValueError, match="wandb login"):
        check_wandb_credentials()

    netrc_text = f"machine api.wandb.ai\n  login user\n  password {FAKE_KEY}\n"
    if setting == "WANDB_API_KEY":
        monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    elif setting == "netrc":  # what `wandb login` writes
        (wandb_env / ".netrc").write_text(netrc_text)
    elif setting == "NETRC":
        (tmp_path / "netrc").write_text(netrc_text)
        monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    elif setting.startswith("WANDB_"):
        monkeypatch.setenv(*setting.split("="))
    import wandb

    wandb.teardown()  # read the environment again
    offline = setting == "logger.wandb.offline=true"
    mode = "offline" if setting == "logger.wandb.mode=offline" else None
    check_wandb_credentials(offline=offline, mode=mode)
    if setting.startswith(("WANDB_API_KEY", "netrc", "NETRC", "WANDB_MODE")):
        assert _online_host_without_credentials() is None
        assert _online_host_without_credentials_from_env() is None


def test_a_malformed_api_key_is_named_before_wandb_starts(wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "abc")
    with pytest.raises(ValueError, match=r"WANDB_API_KEY invalid.*`wandb login --relogin`"):
        check_wandb_credentials()


def test_sweep_jobs_are_grouped_by_their_sweep_folder(cfg_tiny, wandb_env, monkeypatch, tmp_path):
    sweep = "runs/shakespeare_char_cpu/multirun_2026-11-25_10-00-00"
    assert wandb_run_identity("shakespeare_char_cpu", f"{sweep}/3", sweep, "runs") == {
        "group": "shakespeare_char_cpu/multirun_2026-11-25_10-00-00",
        "name": "3",
        "tags": ["shakespeare_char_cpu", "sweep"],
    }
    assert wandb_run_identity("tiny", "runs/tiny/2026-11-25_10-00-00") == {
        "group": "tiny",
        "name": "2026-11-25_10-00-00",
        "tags": ["tiny"],
    }

    # as build_loggers sees a job of `nanogpt-train -m ...`
    monkeypatch.setenv("WANDB_MODE", "offline")
    hydra = {"mode": RunMode.MULTIRUN, "sweep": {"dir": str(tmp_path / "runs" / "tiny" / "multirun_x")}}
    monkeypatch.setattr(HydraConfig.instance(), "cfg", OmegaConf.create({"hydra": hydra}))
    cfg = with_logger(cfg_tiny, "wandb")
    with open_dict(cfg):
        cfg.paths.log_dir = str(tmp_path / "runs")
        cfg.paths.output_dir = str(tmp_path / "runs" / "tiny" / "multirun_x" / "0")
    (logger,) = build_loggers(cfg)
    # what the logger will pass to wandb.init (Lightning starts the run only when it first logs)
    assert {k: logger._wandb_init[k] for k in ("group", "name", "tags")} == {
        "group": "tiny/multirun_x",
        "name": "0",
        "tags": ["tiny", "sweep"],
    }
    assert logger._experiment is None  # building the logger does not start a W&B run


@pytest.mark.slow
def test_two_process_ddp_makes_one_wandb_run(tmp_path, text_path, wandb_env, monkeypatch):
    # Lightning's ddp launcher re-runs the command for rank 1, which must not start a second run.
    monkeypatch.setenv("WANDB_MODE", "offline")
    args = [*TINY, "trainer=ddp_cpu", "trainer.max_steps=10", "trainer.val_check_interval=5"]
    args += [f"data.path={text_path}", "name=ddp", "paths.root_dir=.", "logger=wandb", "callbacks.bleu=null"]
    exe = Path(sys.executable).with_name("nanogpt-train")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [str(exe), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = tmp_path.glob("runs/ddp/*/wandb/offline-run-*")
    got = read_offline_run(run_dir)
    val_loss = [(r["trainer/global_step"], r["val/loss"]) for r in got["history"] if "val/loss" in r]
    assert [step for step, _ in val_loss] == [4, 9]
    assert got["summary"]["val/loss"] == {"min": min(v for _, v in val_loss)}


def test_tensorboard_and_csv_receive_the_validation_metrics_and_lr(cfg_tiny):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = shorter(with_logger(cfg_tiny, "many"))
    with open_dict(cfg):
        cfg.callbacks.bleu = None
    train(cfg)

    out = Path(cfg.paths.output_dir)
    events = EventAccumulator(str(out / "tensorboard")).Reload()
    scalars = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    for key in ["val/loss", "val/ppl", "lr"]:
        expected = csv_column(out, key)
        assert [s for s, _ in scalars[key]] == [s for s, _ in expected], key
        assert [v for _, v in scalars[key]] == pytest.approx([v for _, v in expected]), key
    assert [step for step, _ in scalars["val/loss"]] == [9, 19]
    assert len(scalars["lr"]) == 20
