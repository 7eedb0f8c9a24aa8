"""The run's loggers (the ``logger`` config group): CSV, TensorBoard and Weights & Biases."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_class, instantiate
from lightning.pytorch.loggers import Logger
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

# W&B keeps the last logged value in a run's summary unless told otherwise; the runs table and a
# sweep's comparison should show the best one.
BEST_SUMMARY = {"val/loss": "min", "val/ppl": "min", "val/bpc": "min", "val/bleu": "max"}


def build_loggers(cfg: DictConfig) -> list[Logger]:
    """Build every entry of ``cfg.logger``; a ``null`` entry switches that logger off.

    A W&B entry gets its group, run name and tags from the run (see :func:`wandb_run_identity`) where
    the config leaves them ``null``, and is refused at once when W&B would start online without
    credentials.
    """
    group: Any = cfg.get("logger")
    if not group:
        return []
    loggers = []
    for node in group.values():
        if node is None or "_target_" not in node:
            continue
        if issubclass(get_class(node._target_), LightningWandbLogger):
            check_wandb_credentials(offline=bool(node.get("offline")), mode=node.get("mode"))
            identity = {k: v for k, v in _run_identity(cfg).items() if node.get(k) is None}
            # _convert_: wandb.init checks that tags is a real list, not an OmegaConf ListConfig
            loggers.append(instantiate(node, _convert_="all", **identity))
        else:
            loggers.append(instantiate(node))
    return loggers


def wandb_run_identity(
    name: str,
    output_dir: str | os.PathLike,
    sweep_dir: str | os.PathLike | None = None,
    log_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """W&B's ``group``, ``name`` and ``tags`` for a run folder; the jobs of a sweep share one group.

    A single run is grouped by its experiment ``name`` and named after its folder (the time). A sweep
    job (``sweep_dir`` given) is grouped by the sweep folder as it appears under ``log_dir``, e.g.
    ``shakespeare_char_cpu/multirun_2026-11-25_10-00-00``, and named after its job folder.
    """
    output = Path(output_dir).resolve()
    if sweep_dir is None:
        return {"group": name, "name": output.name, "tags": [name]}
    sweep = Path(sweep_dir).resolve()
    group = _relative(sweep, Path(log_dir).resolve()) if log_dir else sweep.name
    return {"group": group, "name": _relative(output, sweep), "tags": [name, "sweep"]}


def _relative(path: Path, parent: Path) -> str:
    return path.relative_to(parent).as_posix() if path.is_relative_to(parent) else path.name


def _run_identity(cfg: DictConfig) -> dict[str, Any]:
    sweep_dir = None
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        sweep_dir = HydraConfig.get().sweep.dir
    log_dir = cfg.paths.get("log_dir")
    return wandb_run_identity(cfg.get("name") or "default", cfg.paths.output_dir, sweep_dir, log_dir)


class WandbLogger(LightningWandbLogger):
    """Lightning's ``WandbLogger`` with best-value summaries, an offline switch and a finished run.

    - ``val/loss``, ``val/ppl``, ``val/bpc`` keep their minimum in the run summary, ``val/bleu`` its
      maximum (on the usual ``trainer/global_step`` axis).
    - ``offline=True`` passes ``mode="offline"`` to ``wandb.init``. Lightning's own flag refuses
      ``log_model`` offline, yet W&B records offline artifacts in the run and ``wandb sync`` uploads
      them (their files wait in W&B's staging folder, under ``WANDB_DATA_DIR``, until then).
    - The W&B run is finished when training ends, so the next job of a sweep in this process starts
      its own run instead of reusing this one.

    Args:
        offline: write the run under ``<save_dir>/wandb/offline-run-*`` only, for ``wandb sync``.
        **kwargs: Lightning's ``WandbLogger`` arguments, and ``wandb.init``'s (entity, group, tags...).
    """

    def __init__(self, offline: bool = False, **kwargs: Any) -> None:
        mode = _forced_mode(offline, kwargs.get("mode"))
        if mode is not None:
            kwargs["mode"] = mode
        super().__init__(**kwargs)
        if self._wandb_init.get("anonymous") is None:
            # Lightning always passes anonymous=None, which recent wandb warns about on every run
            del self._wandb_init["anonymous"]

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._experiment is not None:
            return self._experiment
        if self._save_dir is not None:
            # older wandb (0.31 creates it) falls back to a temporary folder when this one is missing
            Path(self._save_dir).mkdir(parents=True, exist_ok=True)
        run = super().experiment
        # An exact definition replaces Lightning's "*" one for this key, so it restates the x-axis.
        step = "global_step" if self._wandb_init.get("sync_tensorboard") else "trainer/global_step"
        for key, summary in BEST_SUMMARY.items():
            run.define_metric(key, step_metric=step, step_sync=True, summary=summary)
        return run

    @rank_zero_only
    def finalize(self, status: str) -> None:
        super().finalize(status)  # uploads the best checkpoint when log_model=True
        if self._experiment is not None:
            self._experiment.finish(exit_code=0 if status in ("success", "finished") else 1)


def _forced_mode(offline: bool, mode: str | None = None) -> str | None:
    """The mode nanogpt passes to ``wandb.init``; None leaves it to wandb (``WANDB_MODE``, settings)."""
    if offline:
        return "offline"
    if mode:
        return mode  # logger.wandb.mode, passed on to wandb.init as it is
    # wandb no longer reads this older switch, but users (and other libraries) still set it
    if os.environ.get("WANDB_DISABLED", "").lower() in ("true", "1", "yes"):
        return "disabled"
    return None


def check_wandb_credentials(offline: bool = False, mode: str | None = None) -> None:
    """Refuse to start an online W&B run without credentials, before any work is done.

    Online without credentials, ``wandb.init`` would ask for an API key on a terminal, or fail
    without one. Only the environment and local files are read, never the network.
    """
    if _forced_mode(offline, mode) in ("offline", "dryrun", "disabled"):
        return
    host = _online_host_without_credentials()
    if host is None:
        return
    raise ValueError(
        f"logger=wandb runs online, but no W&B credentials were found for {host} (no WANDB_API_KEY, "
        "no ~/.netrc entry). Run `wandb login` (or set WANDB_API_KEY), or log locally with "
        "WANDB_MODE=offline or logger.wandb.offline=true and upload later with `wandb sync`, or switch "
        "W&B off with WANDB_MODE=disabled (or pick another logger, e.g. logger=csv)"
    )


def _online_host_without_credentials() -> str | None:
    """W&B's server URL if wandb would run online there with no credentials, else None."""
    try:
        from wandb.errors import AuthenticationError
        from wandb.sdk.lib import wbauth
        from wandb.sdk.wandb_setup import singleton
    except ImportError:
        # an older wandb: look where it looked, the environment and ~/.netrc
        return _online_host_without_credentials_from_env()

    try:
        # what wandb.init will use: environment variables and settings files (`wandb offline` writes one)
        settings = singleton().settings
        if settings.mode in ("offline", "dryrun", "disabled"):
            return None
        auth = wbauth.authenticate_session(
            host=settings.base_url, source="nanogpt", prompt=False, update_session=False
        )
    except AuthenticationError as err:
        raise ValueError(f"W&B credentials are unusable: {err}; run `wandb login --relogin`") from None
    except (AttributeError, TypeError):
        # these are wandb internals; where another wandb version moved them, look where it used to
        return _online_host_without_credentials_from_env()
    return None if auth else settings.base_url


def _online_host_without_credentials_from_env() -> str | None:
    if os.environ.get("WANDB_MODE", "online").lower() in ("offline", "dryrun", "disabled"):
        return None
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return None
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    path = Path(os.environ.get("NETRC") or "~/.netrc").expanduser()
    try:
        entry = netrc.netrc(path).authenticators(urlsplit(host).netloc)
    except (OSError, netrc.NetrcParseError):
        entry = None
    return None if entry and entry[2] else host
