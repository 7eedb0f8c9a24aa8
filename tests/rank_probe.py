"""A test-only callback: every rank writes down what it trained with, for the multi-process tests.

Used as ``+callbacks.rank_probe._target_=tests.rank_probe.RankProbe
+callbacks.rank_probe.output_dir=${paths.output_dir}``, with the repository root on PYTHONPATH.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


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
    "+callbacks.rank_probe._target_=tests.rank_probe.RankProbe",
    "+callbacks.rank_probe.output_dir=${paths.output_dir}",
]
ROOT = str(Path(__file__).resolve().parents[1])  # for PYTHONPATH, so the ranks can import this


def read_ranks(run_dir: Path) -> list[dict[str, Any]]:
    """The probe records of a run, by rank."""
    return [json.loads(p.read_text()) for p in sorted((run_dir / "ranks").glob("rank*.json"))]
