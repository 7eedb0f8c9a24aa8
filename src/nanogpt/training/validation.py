"""A finished run's final validation: its ``best.ckpt`` on the whole val split, as ``nanogpt-eval``
scores it (:func:`nanogpt.evaluate.val_loss`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from nanogpt.data.datamodule import TextDataModule
from nanogpt.evaluate import val_loss
from nanogpt.runs.checkpoint import load_checkpoint, read_checkpoint

log = logging.getLogger(__name__)


def final_validation(trainer: L.Trainer, datamodule: TextDataModule) -> dict[str, Any]:
    """A finished run's headline: its ``best.ckpt`` scored on the whole val split, as ``nanogpt-eval
    ckpt_path=<run>`` scores it, so the two print the same loss. ``data.final_eval_batches`` caps
    the windows for a huge val split (``data.eval_batches``, which the validations during the run
    score, is cheaper and noisier, and stays what ``best_val_loss`` and sweeps rank by).

    Returns result.json's ``final_val_*`` fields, or nothing where there is nothing to score (a
    smoke test, a run without ``best.ckpt``) or it is not this process's to score: global rank 0
    scores every window alone, on its device, so no collective runs and any strategy (DDP, FSDP's
    whole checkpoint, ``ddp_spawn``'s main process) gives the same number.
    """
    checkpoint = trainer.checkpoint_callback  # under debug=fdr the only one is LastCheckpoint
    best = checkpoint.best_model_path if isinstance(checkpoint, ModelCheckpoint) else ""
    if trainer.fast_dev_run or trainer.global_rank != 0 or not best:
        return {}
    if not Path(best).is_file():  # trainer.strategy.state_dict_type=sharded: a folder only FSDP reads
        log.info("no final validation: %s is a folder of FSDP shards, which nanogpt-eval cannot read", best)
        return {}
    model, _, _ = load_checkpoint(best, trainer.strategy.root_device)
    loss, n_tokens = val_loss(model, datamodule.final_eval_dataset())
    fields = {
        "final_val_loss": loss,
        "final_val_tokens": n_tokens,
        "final_val_step": read_checkpoint(best, mmap=True)["global_step"],
    }
    if datamodule.final_eval_batches is not None:
        fields["final_val_batches"] = datamodule.final_eval_batches
    return fields
