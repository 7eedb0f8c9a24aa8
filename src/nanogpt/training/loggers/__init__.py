"""The run's loggers (the ``logger`` config group): CSV, TensorBoard and Weights & Biases.

:func:`build_loggers` builds every entry of the group; the W&B specifics (best-value summaries,
offline mode, the credential check) live in :mod:`nanogpt.training.loggers.wandb`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_class, instantiate
from lightning.pytorch.loggers import Logger
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from omegaconf import DictConfig


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
            from nanogpt.training.loggers.wandb import check_wandb_credentials

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
    ``shakespeare_char_cpu/multirun_2026-11-25_10-00-00_5be21d``, and named after its job folder.
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
