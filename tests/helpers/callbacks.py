"""Test-only Lightning callbacks, which runs load by name (``callbacks.<key>._target_=tests.helpers...``).

- :class:`RankProbe`: every rank writes down what it trained with, for the multi-process tests. Used as
  :data:`PROBE`, with the repository root (:data:`ROOT`) on PYTHONPATH so the ranks can import it.
- :class:`KeepBar`: the progress bar, kept after the run.
- :class:`CopyLastCkptAt`: ``last.ckpt`` as it stood after a given step, for the resume tests.
- :class:`PoisonAt`: NaN weights before a given step.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from nanogpt.training.callbacks.console import StepProgressBar


class RankProbe(Callback):
    """Write ``<output_dir>/ranks/rank<global rank>.json`` when training ends, on every rank.

    It holds the rank's process, world size, initial learning rate and model shape, a hash of every
    training batch it drew, and the val/loss it saw at each validation.
    """

    def __init__(self, output_dir: str) -> None:
        self.output_dir = Path(output_dir)
        self.batches: list[str] = []
        self.val_loss: list[float] = []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, i: int
    ) -> None:
        self.batches.append(hashlib.md5(batch[0].cpu().numpy().tobytes()).hexdigest())

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if "val/loss" in trainer.callback_metrics:
            self.val_loss.append(float(trainer.callback_metrics["val/loss"]))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        group = trainer.optimizers[0].param_groups[0]
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "pid": os.getpid(),
            "strategy": type(trainer.strategy).__name__,
            "lr": group.get("initial_lr", group["lr"]),
            "weight_decay": max(g["weight_decay"] for g in trainer.optimizers[0].param_groups),
            "model": dict(pl_module.hparams["model"]),
            "accumulate_grad_batches": trainer.accumulate_grad_batches,
            "batches": self.batches,
            "val_loss": self.val_loss,
        }
        folder = self.output_dir / "ranks"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


PROBE = [
    f"+callbacks.rank_probe._target_={RankProbe.__module__}.RankProbe",
    "+callbacks.rank_probe.output_dir=${paths.output_dir}",
]
ROOT = str(Path(__file__).resolve().parents[2])  # for PYTHONPATH, so the ranks can import this


def read_ranks(run_dir: Path) -> list[dict[str, Any]]:
    """The probe records of a run, by rank."""
    return [json.loads(p.read_text()) for p in sorted((run_dir / "ranks").glob("rank*.json"))]


class KeepBar(StepProgressBar):
    """The progress bar, kept after the run so a test can read its totals and rates."""

    bars: list[KeepBar] = []

    def __init__(self) -> None:
        super().__init__(refresh_rate=1)
        KeepBar.bars.append(self)

    @property
    def tokens_per_s(self) -> float:
        return float(self._extra["tok/s"].replace(",", ""))


class CopyLastCkptAt(Callback):
    """Copy ``last.ckpt`` as it stands once step ``step`` is done (its validation too) to ``to``."""

    def __init__(self, step: int, dirpath: str, to: str) -> None:
        self.step, self.source, self.to = step, Path(dirpath) / "last.ckpt", Path(to)

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step and not self.to.exists():
            self.to.parent.mkdir(parents=True)
            shutil.copy(self.source, self.to)


class PoisonAt(Callback):
    """Turn the weights to NaN just before optimizer step ``step`` (1-based) trains."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step + 1 == self.step:
            with torch.no_grad():
                pl_module.model.lm_head.weight.fill_(float("nan"))


def target(callback: type[Callback], **kwargs: Any) -> dict[str, Any]:
    """The config node that makes a run build ``callback(**kwargs)``."""
    return {"_target_": f"{callback.__module__}.{callback.__qualname__}", **kwargs}
