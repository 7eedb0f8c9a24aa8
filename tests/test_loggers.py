"""The logger group: W&B (offline, so no account or network is needed), TensorBoard and CSV."""

import csv
import json
import socket
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from nanogpt.training.job import train
from nanogpt.training.loggers import build_loggers, wandb_run_identity
from nanogpt.training.loggers.wandb import (
    BEST_SUMMARY,
    WandbLogger,
    _online_host_without_credentials,
    _online_host_without_credentials_from_env,
    _wandb_session_credentials,
    check_wandb_credentials,
)

from .helpers import compose_train, isolate_wandb, read_offline_run

FAKE_KEY = "x" * 40  # the shape of a W&B API key; nothing ever checks it with a server


@pytest.fixture
def wandb_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No W&B credentials, no user settings, and every file wandb writes inside this test's folder."""
    import wandb

    yield isolate_wandb(monkeypatch, tmp_path)
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


def csv_column(run: Path, key: str) -> list[tuple[int, float]]:
    with open(run / "csv" / "metrics.csv") as f:
        return [(int(r["step"]), float(r[key])) for r in csv.DictReader(f) if r.get(key)]


def test_an_offline_run_needs_no_credentials_and_keeps_metrics_summaries_config_samples_and_the_model(
    trained_run,
):
    # the shared run: logger=many plus W&B with logger.wandb.offline=true and log_model=true, trained
    # with no W&B credentials and no WANDB_MODE
    out = trained_run.path
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    got = read_offline_run(run_dir)
    identity = {key: got["run"][key] for key in ("project", "run_group", "display_name", "tags")}
    assert identity == {"project": "nanogpt", "run_group": "tiny", "display_name": "run", "tags": ["tiny"]}

    # every metric Lightning logged, on the trainer's step axis
    val_loss = csv_column(out, "val/loss")
    logged_val = [(r["trainer/global_step"], r["val/loss"]) for r in got["history"] if "val/loss" in r]
    assert [s for s, _ in logged_val] == [s for s, _ in val_loss] == [10, 20, 30, 40]
    assert [v for _, v in logged_val] == pytest.approx([v for _, v in val_loss])
    logged = set().union(*got["history"])
    assert {"train/loss", "lr", "val/ppl", "val/bpc", "val/bleu"} <= logged
    # the summary holds the best value, not the last one
    assert got["summary"]["val/loss"] == {"min": pytest.approx(min(v for _, v in val_loss))}
    assert set(got["summary"]["val/ppl"]) == set(got["summary"]["val/bpc"]) == {"min"}
    assert set(got["summary"]["val/bleu"]) == {"max"}

    # the whole resolved config, as train() logged it
    resolved = OmegaConf.to_container(trained_run.cfg, resolve=True)
    assert set(resolved) <= set(got["config"])
    assert got["config"]["model"]["n_layer"] == 2 and got["config"]["logger"]["wandb"]["project"] == "nanogpt"

    # the BLEU samples of each validation that scored them (every second) as a table
    tables = sorted((run_dir / "files" / "media" / "table" / "val").glob("samples_*.table.json"))
    assert len(tables) == len(csv_column(out, "val/bleu")) == 2
    table = json.loads(tables[-1].read_text())
    assert table["columns"] == ["step", "prompt", "reference", "continuation"]
    assert len(table["data"]) == trained_run.cfg.callbacks.bleu.num_prompts
    assert got["summary"]["val/samples"]["_type"] == "table-file"
    assert got["summary"]["val/samples"]["path"] == tables[-1].relative_to(run_dir / "files").as_posix()

    # log_model: best.ckpt as the run's model artifact; offline, its copy waits in WANDB_DATA_DIR for
    # `wandb sync`
    models = [a for a in got["artifacts"] if a["type"] == "model"]
    (best,) = [a for a in models if "best" in a["aliases"]]
    assert best["name"] == f"model-{run_dir.name.rsplit('-', 1)[-1]}"
    assert json.loads(best["metadata"])["score"] == pytest.approx(trained_run.metrics["best_val_loss"])
    (entry,) = best["manifest"]["contents"]
    staged = Path(entry["local_path"])
    assert entry["path"] == "model.ckpt" and staged.is_file()
    assert staged.read_bytes() == Path(trained_run.metrics["best_ckpt"]).read_bytes()

    home = trained_run.wandb_home
    assert not list(home.rglob("*wandb*")) and not (home / ".netrc").exists()  # $HOME untouched


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


class FakeRun:
    """What the loggers call on a W&B run, recorded; Lightning defines no metrics on a run of this type."""

    id = "fake"

    def __init__(self) -> None:
        self.metrics: list[tuple[str, dict]] = []
        self.finished: list[int] = []

    def define_metric(self, name: str, **options) -> None:
        self.metrics.append((name, options))

    def finish(self, exit_code: int) -> None:
        self.finished.append(exit_code)


@pytest.fixture
def fake_wandb_init(monkeypatch: pytest.MonkeyPatch) -> list[tuple[dict, FakeRun]]:
    """``wandb.init`` replaced: the arguments of each call and the FakeRun it returned."""
    import wandb

    calls = []

    def init(**kwargs) -> FakeRun:
        calls.append((kwargs, FakeRun()))
        return calls[-1][1]

    monkeypatch.setattr(wandb, "init", init)
    monkeypatch.setattr(wandb, "run", None)  # Lightning would join a run left in progress instead
    return calls


@pytest.mark.parametrize(("status", "exit_code"), [("success", 0), ("failed", 1)])
def test_best_summaries_are_defined_once_per_run_and_only_a_started_run_is_finished(
    status, exit_code, tmp_path, fake_wandb_init
):
    WandbLogger(save_dir=tmp_path / "idle", project="p").finalize(status)
    assert fake_wandb_init == []  # finalize does not start a run just to finish it

    logger = WandbLogger(save_dir=tmp_path / "w", project="p")
    assert logger.experiment is logger.experiment
    runs = [run for _, run in fake_wandb_init]
    assert runs == [logger.experiment]
    assert (tmp_path / "w").is_dir()
    assert runs[0].metrics == [
        (key, {"step_metric": "trainer/global_step", "step_sync": True, "summary": summary})
        for key, summary in BEST_SUMMARY.items()
    ]
    logger.finalize(status)
    assert runs[0].finished == [exit_code]

    # TensorBoard-synced runs log against TensorBoard's step instead
    synced = WandbLogger(save_dir=tmp_path / "tb", project="p", sync_tensorboard=True).experiment
    assert {options["step_metric"] for _, options in synced.metrics} == {"global_step"}


def test_lightning_still_passes_anonymous_none_to_wandb_init(tmp_path, monkeypatch, fake_wandb_init):
    """nanogpt's logger leaves out the ``anonymous=None`` Lightning passes, which wandb warns about.

    ``_drop_anonymous_none`` edits Lightning's private ``_wandb_init`` for that; this says when it can go.
    """
    import wandb
    from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger

    assert LightningWandbLogger(save_dir=tmp_path, project="p").experiment
    assert WandbLogger(save_dir=tmp_path, project="p").experiment
    (lightning, _), (nanogpt, _) = fake_wandb_init
    assert lightning.get("anonymous", "left out") is None, (
        "Lightning no longer passes anonymous=None to wandb.init: remove _drop_anonymous_none from "
        "nanogpt/loggers/wandb.py"
    )
    assert "anonymous" not in nanogpt, (
        "Lightning changed the private _wandb_init that _drop_anonymous_none edits, so wandb warns about "
        "anonymous=None on every run again: update _drop_anonymous_none in nanogpt/loggers/wandb.py"
    )

    warnings = []
    monkeypatch.setattr(wandb, "termwarn", lambda message, **kwargs: warnings.append(message))
    wandb.Settings().anonymous = None  # what wandb.init(anonymous=None) does
    assert any("anonymous" in message for message in warnings), (
        "wandb no longer warns about anonymous=None: remove _drop_anonymous_none from "
        "nanogpt/loggers/wandb.py"
    )


def test_the_private_wandb_credential_lookup_still_works(wandb_env, monkeypatch):
    """``check_wandb_credentials`` reads wandb's own settings and credentials through private wandb API.

    Where wandb moves it, the check falls back to WANDB_MODE, WANDB_API_KEY and ~/.netrc alone, and misses
    what wandb reads besides (settings files, their base_url and api_key).
    """
    import wandb

    moved = "wandb moved the private API that _wandb_session_credentials (nanogpt/loggers/wandb.py) reads"
    try:
        mode, host, has_credentials = _wandb_session_credentials()
    except (ImportError, AttributeError, TypeError) as err:
        pytest.fail(f"{moved}: {err!r}")
    assert (mode, has_credentials) == ("online", False) and host.startswith("https://"), moved
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    wandb.teardown()  # read the environment again
    assert _wandb_session_credentials() == (mode, host, True), moved
    monkeypatch.setenv("WANDB_MODE", "offline")
    wandb.teardown()
    assert _wandb_session_credentials()[0] == "offline", moved


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
def test_credentials_or_an_offline_mode_let_a_run_start(setting, wandb_env, tmp_path, monkeypatch, capfd):
    def no_network(*args):
        raise AssertionError("tried to reach the network")

    # not silent: wandb.login(), for one, would print who is logged in, after asking the server
    monkeypatch.delenv("WANDB_SILENT")
    monkeypatch.setattr(socket.socket, "connect", no_network)
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
    # the check only looks: it prints nothing and writes no settings or ~/.netrc
    assert capfd.readouterr() == ("", "")
    assert [p.name for p in wandb_env.iterdir()] == ([".netrc"] if setting == "netrc" else [])


def test_a_malformed_api_key_is_named_before_wandb_starts(wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "abc")
    with pytest.raises(ValueError, match=r"WANDB_API_KEY invalid.*`wandb login --relogin`"):
        check_wandb_credentials()


def test_sweep_jobs_are_grouped_by_their_sweep_folder(cfg_tiny, wandb_env, monkeypatch, tmp_path):
    import wandb

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
    started, real_init = [], wandb.init
    monkeypatch.setattr(wandb, "init", lambda **kwargs: started.append(kwargs) or real_init(**kwargs))
    (logger,) = build_loggers(cfg)
    assert started == [] and wandb.run is None  # building the logger does not start a W&B run
    run = logger.experiment  # as Lightning does when it first logs
    assert (run.group, run.name, run.tags) == ("tiny/multirun_x", "0", ("tiny", "sweep"))
    logger.finalize("success")
    assert len(started) == 1 and wandb.run is None


def test_tensorboard_and_csv_receive_the_validation_metrics_and_lr(trained_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = trained_run.path
    events = EventAccumulator(str(out / "tensorboard")).Reload()
    scalars = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    for key in ["val/loss", "val/ppl", "lr"]:
        expected = csv_column(out, key)
        assert [s for s, _ in scalars[key]] == [s for s, _ in expected], key
        assert [v for _, v in scalars[key]] == pytest.approx([v for _, v in expected]), key
    assert [step for step, _ in scalars["val/loss"]] == [10, 20, 30, 40]
    assert len(scalars["lr"]) == 40
