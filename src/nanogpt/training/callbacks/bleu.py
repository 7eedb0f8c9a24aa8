"""``val/bleu`` and ``val/chrf`` during training: :mod:`nanogpt.metrics.bleu`'s recipe after validation."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from torch.distributed.fsdp import FullyShardedDataParallel

from nanogpt.metrics.bleu import BleuSample, BleuSettings, evaluate_bleu
from nanogpt.options import positive_int


class BleuCallback(Callback):
    """Log ``val/bleu`` and ``val/chrf`` after validation, and the samples they scored as text.

    The recipe is in :mod:`nanogpt.metrics.bleu`. Samples go to every active logger: a W&B table
    (prompt, reference, continuation), a TensorBoard text entry, or ``samples.jsonl`` beside a CSV
    logger's ``metrics.csv``; the last two also give each continuation's own chrF.

    Args:
        every_n_evals: measure at every n-th validation only, to save time.
        **settings: the recipe, :class:`~nanogpt.metrics.bleu.BleuSettings` (its defaults are
            ``configs/bleu/default.yaml``'s).
    """

    def __init__(self, every_n_evals: int = 1, **settings: Any) -> None:
        self.settings = BleuSettings(**settings)
        self.every_n_evals = positive_int(every_n_evals, "callbacks.bleu.every_n_evals")
        self._evals = 0

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._evals += 1
        dm = trainer.datamodule
        corpus = getattr(dm, "corpus", None)
        if (self._evals - 1) % self.every_n_evals or corpus is None:
            return  # prompts come from a prepared val split; a bare DataLoader has none
        # Under FSDP (trainer=fsdp) a rank holds a shard of each weight, and generating calls the
        # model outside the FSDP forward that would gather them: gather them all for the while.
        whole = (
            FullyShardedDataParallel.summon_full_params(trainer.model, writeback=False)
            if isinstance(trainer.model, FullyShardedDataParallel)
            else contextlib.nullcontext()
        )
        # Every rank scores the same prompts the same way, so syncing averages equal values.
        with whole:
            result = evaluate_bleu(pl_module.model, dm.tokenizer, corpus.tokens("val"), self.settings)
        pl_module.log("val/bleu", result.bleu, batch_size=1, sync_dist=True)
        pl_module.log("val/chrf", result.chrf, batch_size=1, sync_dist=True)
        self._log_samples(trainer, result.samples)

    @rank_zero_only
    def _log_samples(self, trainer: L.Trainer, samples: list[BleuSample]) -> None:
        step = trainer.global_step
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                rows = [[step, s.prompt, s.reference, s.continuation] for s in samples]
                columns = ["step", "prompt", "reference", "continuation"]
                logger.log_text("val/samples", columns=columns, data=rows)
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("val/samples", _markdown(samples), global_step=step)
            elif isinstance(logger, CSVLogger):
                path = Path(logger.log_dir) / "samples.jsonl"
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a") as f:
                    for s in samples:
                        f.write(json.dumps({"step": step, **dataclasses.asdict(s)}) + "\n")


def _markdown(samples: list[BleuSample]) -> str:
    # TensorBoard renders text as Markdown; indenting by 4 spaces keeps newlines and spacing.
    def block(text: str) -> str:
        return "\n".join("    " + line for line in text.splitlines())

    parts = [
        f"**prompt**\n\n{block(s.prompt)}\n\n**reference**\n\n{block(s.reference)}\n\n"
        f"**model** (chrF {s.chrf:.1f})\n\n{block(s.continuation)}"
        for s in samples
    ]
    return "\n\n---\n\n".join(parts)
