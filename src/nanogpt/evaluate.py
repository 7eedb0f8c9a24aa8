"""``nanogpt-eval``: score a checkpoint on the whole val split and write the result beside it.

An override of a key it does not read (``model.block_size=4096``, ``data.batch_size=8``) is refused,
not ignored: :data:`EVAL_KEYS` are the ones it reads.

``evaluate(cfg)`` is the whole job and is what tests call; ``main`` is the console script.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from nanogpt import CONFIG_DIR
from nanogpt.checkpoint import load_checkpoint, read_checkpoint
from nanogpt.data import CorpusConfig, prepare_corpus
from nanogpt.data.windows import EvalWindows, check_split_fits
from nanogpt.devices import inference_device
from nanogpt.errors import user_errors_in_one_line
from nanogpt.metrics.bleu import TOKENIZE, BleuSettings, evaluate_bleu
from nanogpt.metrics.bpc import bpc_per_nat
from nanogpt.model import GPT
from nanogpt.options import positive_int
from nanogpt.run_dir import resolve_checkpoint

if TYPE_CHECKING:
    import lightning as L

    from nanogpt.data.datamodule import TextDataModule

log = logging.getLogger(__name__)

# The keys nanogpt-eval reads, and the config groups it composes (data=shakespeare_gpt2 picks one).
# eval.yaml holds more, which it never reads: the data group's training options (its batch_size,
# eval_batches, ...), and model.block_size and seed, there only because the data group refers to them.
EVAL_GROUPS = ("data", "bleu", "paths")
EVAL_KEYS = (
    *("ckpt_path", "batch_size", "device"),
    *(f"data.{f.name}" for f in dataclasses.fields(CorpusConfig)),
    *(f"bleu.{f.name}" for f in dataclasses.fields(BleuSettings)),
    *("paths.root_dir", "paths.data_dir"),  # data.data_dir is under them
)
# why a key a user may reach for is not one of them
NOT_READ = {
    "model.block_size": "the windows are the checkpoint's own context",
    "data.block_size": "the windows are the checkpoint's own context",
    "data.batch_size": "windows per forward pass are batch_size",
    "data.eval_batches": "nanogpt-eval scores the whole val split",
    "data.final_eval_batches": "nanogpt-eval scores the whole val split",
    "seed": "nanogpt-eval draws nothing at random; BLEU sampling uses bleu.seed",
}


def refuse_unread_overrides(overrides: Sequence[str]) -> None:
    """Refuse an override of a key nanogpt-eval does not read, which would change nothing, silently."""
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if key in EVAL_KEYS or key in EVAL_GROUPS or key.startswith(("hydra.", "hydra/")):
            continue
        why = f" ({NOT_READ[key]})" if key in NOT_READ else ""
        raise ValueError(
            f"{override.input_line}: nanogpt-eval does not read {key}{why}; drop it. The keys it reads: "
            + ", ".join(EVAL_KEYS)
        )


@torch.no_grad()
def val_loss(model: GPT, windows: EvalWindows) -> tuple[float, int]:
    """Mean cross-entropy (nats per token) over every target token of ``windows``, and their count."""
    device = model.lm_head.weight.device
    total, count = 0.0, 0
    for x, y in windows:
        _, loss = model(x.to(device), y.to(device))
        total += loss.item() * y.numel()
        count += y.numel()
    return total / count, count


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
    from lightning.pytorch.callbacks import ModelCheckpoint

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


def evaluate(cfg: DictConfig, out: TextIO | None = None) -> dict[str, Any]:
    """Loss, perplexity, bits per character, BLEU and chrF of ``cfg.ckpt_path`` on ``cfg.data``'s val split.

    Prints them as a table and writes them to ``<checkpoint>.eval.json`` beside the checkpoint.
    """
    out = out or sys.stdout
    bleu = BleuSettings(**OmegaConf.to_container(cfg.bleu, resolve=True))
    batch_size = positive_int(cfg.batch_size, "batch_size")
    device = inference_device(cfg.device)
    path = resolve_checkpoint(cfg.ckpt_path, "best")
    model, tokenizer, hparams = load_checkpoint(path, device)

    # the data group's corpus options; the model decides the window length
    corpus = prepare_corpus(CorpusConfig.from_data(cfg.data))
    if corpus.meta.tokenizer != hparams["tokenizer"]:
        data_kind, ckpt_kind = corpus.meta.tokenizer["kind"], hparams["tokenizer"]["kind"]
        raise ValueError(
            f"ckpt_path={path} was trained with another vocabulary ({ckpt_kind}, "
            f"{tokenizer.vocab_size} tokens) than data={corpus.folder} ({data_kind}, "
            f"{corpus.vocab_size} tokens); pass the data the model was trained on, "
            f"e.g. data=shakespeare_{'gpt2' if ckpt_kind == 'gpt2' else 'char'}"
        )
    block_size = model.config.block_size
    check_split_fits(corpus, "val", block_size)

    # non-overlapping windows over the whole split: every token after the first is scored once
    windows = EvalWindows(corpus.path("val"), block_size, batch_size, None, dtype=corpus.meta.dtype)
    loss, n_tokens = val_loss(model, windows)
    scores = evaluate_bleu(model, tokenizer, corpus.tokens("val"), bleu)
    result = {
        "ckpt_path": str(path),
        "val_tokens_scored": n_tokens,
        "loss": loss,
        "ppl": math.exp(loss),
        "bpc": loss * bpc_per_nat(corpus.meta),
        "bleu": scores.bleu,
        "chrf": scores.chrf,
        "bleu_recipe": {
            **OmegaConf.to_container(cfg.bleu, resolve=True),
            "tokenize": TOKENIZE,
            "smooth_method": bleu.smooth_method,
        },
        # sacrebleu's own account of its settings (and version), as papers cite them
        "bleu_signature": scores.bleu_signature,
        "chrf_signature": scores.chrf_signature,
    }
    rows = [
        ("loss", f"{loss:.4f}"),
        ("perplexity", f"{result['ppl']:.3f}"),
        ("bits/char", f"{result['bpc']:.4f}"),
        ("BLEU", f"{scores.bleu:.2f}"),
        ("chrF", f"{scores.chrf:.2f}"),
    ]
    print(f"{path}  ({n_tokens:,} val tokens)", file=out)
    for name, value in rows:
        print(f"  {name:<12}{value:>10}", file=out)
    json_path = path.with_suffix(".eval.json")
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written to {json_path}", file=out)
    return result


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    with user_errors_in_one_line():
        refuse_unread_overrides(HydraConfig.get().overrides.task)
        evaluate(cfg)


if __name__ == "__main__":
    main()
