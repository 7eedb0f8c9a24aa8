"""The run's loggers (the ``logger`` config group): CSV, TensorBoard and Weights & Biases."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig


def build_loggers(cfg: DictConfig) -> list[Logger]:
    """Build every entry of ``cfg.logger``; a ``null`` entry switches that logger off."""
    group: Any = cfg.get("logger")
    if not group:
        return []
    return [instantiate(node) for node in group.values() if node is not None and "_target_" in node]
