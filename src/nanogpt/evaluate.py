"""``nanogpt-eval``: score a checkpoint on the whole val split and write the result beside it.

``evaluate(cfg)`` is the whole job; the console script is :mod:`nanogpt.cli.evaluate`, which also
refuses an override of a key this does not read. :func:`val_loss` is the loss a training run's final
validation scores too (:mod:`nanogpt.training.validation`).
"""

from __future__ import annotations

import json
import logging
import math
import sys
from typing import TYPE_CHECKING, Any, TextIO

import torch
from omegaconf import DictConfig, OmegaConf

from nanogpt.data import CorpusConfig, prepare_corpus
from nanogpt.data.windows import EvalWindows, check_split_fits
from nanogpt.devices import inference_device
from nanogpt.metrics.bleu import TOKENIZE, BleuSettings, evaluate_bleu
from nanogpt.metrics.bpc import bpc_per_nat
from nanogpt.model import GPT
from nanogpt.options import positive_int
from nanogpt.runs.checkpoint import load_checkpoint
from nanogpt.runs.folder import resolve_checkpoint

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


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
