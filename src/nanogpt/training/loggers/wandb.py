"""Weights & Biases: Lightning's ``WandbLogger`` with best-value summaries, an offline switch and a
finished run, and a check that refuses an online run without credentials before any work is done."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

# W&B keeps the last logged value in a run's summary unless told otherwise; the runs table and a
# sweep's comparison should show the best one.
BEST_SUMMARY = {"val/loss": "min", "val/ppl": "min", "val/bpc": "min", "val/bleu": "max", "val/chrf": "max"}

# the modes in which wandb never talks to a server, so needs no credentials
LOCAL_MODES = ("offline", "dryrun", "disabled")


class WandbLogger(LightningWandbLogger):
    """Lightning's ``WandbLogger`` with best-value summaries, an offline switch and a finished run.

    - ``val/loss``, ``val/ppl``, ``val/bpc`` keep their minimum in the run summary, ``val/bleu`` and
      ``val/chrf`` their maximum (on the usual ``trainer/global_step`` axis).
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
        _drop_anonymous_none(self)
        # Lightning logs against this x-axis (its "*" definition); an exact definition replaces that one
        # for its key, so the best-value summaries restate it.
        self._best_step_metric = "global_step" if kwargs.get("sync_tensorboard") else "trainer/global_step"
        # The id of the run whose best-value summaries are defined: None until this logger starts (or
        # joins) a run. A string, not the run, so that Lightning can still pickle the logger.
        self._best_summaries_run_id: str | None = None

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._best_summaries_run_id is None and self.save_dir is not None:
            # older wandb (0.31 creates it) falls back to a temporary folder when this one is missing
            Path(self.save_dir).mkdir(parents=True, exist_ok=True)
        run = super().experiment
        run_id = str(getattr(run, "id", None))
        if run_id != self._best_summaries_run_id:
            for key, summary in BEST_SUMMARY.items():
                run.define_metric(key, step_metric=self._best_step_metric, step_sync=True, summary=summary)
            self._best_summaries_run_id = run_id
        return run

    @rank_zero_only
    def finalize(self, status: str) -> None:
        super().finalize(status)  # uploads the best checkpoint when log_model=True
        if self._best_summaries_run_id is not None:  # a run was started; self.experiment won't start one
            self.experiment.finish(exit_code=0 if status in ("success", "finished") else 1)


def _drop_anonymous_none(logger: LightningWandbLogger) -> None:
    """Keep Lightning from passing ``anonymous=None`` to ``wandb.init``, which wandb 0.31 warns about.

    Private Lightning API, on purpose: Lightning always adds the argument to the ``wandb.init`` arguments
    it keeps in ``_wandb_init`` and has no public way to leave it out. Where that changes, this does
    nothing and the warning is back; ``test_lightning_still_passes_anonymous_none_to_wandb_init`` says so.
    """
    init_kwargs = getattr(logger, "_wandb_init", None)
    if isinstance(init_kwargs, dict) and "anonymous" in init_kwargs and init_kwargs["anonymous"] is None:
        del init_kwargs["anonymous"]


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
    if _forced_mode(offline, mode) in LOCAL_MODES:
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
    except ImportError:
        # an older wandb: look where it looked, the environment and ~/.netrc
        return _online_host_without_credentials_from_env()
    try:
        mode, host, has_credentials = _wandb_session_credentials()
    except AuthenticationError as err:
        raise ValueError(f"W&B credentials are unusable: {err}; run `wandb login --relogin`") from None
    except (ImportError, AttributeError, TypeError):
        # another wandb version moved these internals: look where older ones looked
        return _online_host_without_credentials_from_env()
    return None if mode in LOCAL_MODES or has_credentials else host


def _wandb_session_credentials() -> tuple[str, str, bool]:
    """wandb's effective mode and server URL, and whether it has credentials for that server.

    Private wandb API, on purpose; ``test_the_private_wandb_credential_lookup_still_works`` fails when it
    moves. The public calls do more than look: ``wandb.login(prompt=False, verify=False)``, once it finds
    credentials, starts wandb-core and asks the server for the user name to print (unless W&B is silent),
    and answers False offline as it does without a key; ``wandb.setup().settings`` starts wandb-core and
    exports ``WANDB_SERVICE`` before we know whether the run may start.
    """
    from wandb.sdk.lib import wbauth
    from wandb.sdk.wandb_setup import singleton

    # what wandb.init will use: environment variables and settings files (`wandb offline` writes one)
    settings = singleton().settings
    if settings.mode in LOCAL_MODES:
        return settings.mode, settings.base_url, False
    # WANDB_API_KEY, WANDB_IDENTITY_TOKEN_FILE, ~/.netrc or the settings' api_key: no prompt, no
    # network, and the session's credentials stay as they were
    auth = wbauth.authenticate_session(
        host=settings.base_url, source="nanogpt", prompt=False, update_session=False
    )
    return settings.mode, settings.base_url, auth is not None


def _online_host_without_credentials_from_env() -> str | None:
    if os.environ.get("WANDB_MODE", "online").lower() in LOCAL_MODES:
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
