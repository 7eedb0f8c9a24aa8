"""``nanogpt-eval``: score a checkpoint on the whole val split and write the result beside it.

``evaluate(cfg)`` is the whole job and is what tests call; ``main`` is the console script.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any, TextIO

import hydra
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from nanogpt.bleu import BleuSettings, evaluate_bleu, split_tokens
from nanogpt.checkpoint import load_checkpoint, resolve_checkpoint
from nanogpt.data import TextDataModule
from nanogpt.model import GPT
from nanogpt.train import CONFIG_DIR, instantiate


@torch.no_grad()
def val_loss(model: GPT, datamodule: TextDataModule) -> tuple[float, int]:
    """Mean cross-entropy (nats per token) over every token of the val split's windows, and their count."""
    device = model.lm_head.weight.device
    total, count = 0.0, 0
    for x, y in datamodule.eval_dataset("val", None):  # non-overlapping windows over the whole split
        _, loss = model(x.to(device), y.to(device))
        total += loss.item() * y.numel()
        count += y.numel()
    return total / count, count


def evaluate(cfg: DictConfig, out: TextIO | None = None) -> dict[str, Any]:
    """Loss, perplexity, bits per character and BLEU of ``cfg.ckpt_path`` on ``cfg.data``'s val split.

    Prints them as a table and writes them to ``<checkpoint>.eval.json`` beside the checkpoint.
    """
    out = out or sys.stdout
    bleu = BleuSettings(**OmegaConf.to_container(cfg.bleu, resolve=True))
    path = resolve_checkpoint(cfg.ckpt_path)
    model, tokenizer, hparams = load_checkpoint(path, cfg.device)

    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.model = {"block_size": model.config.block_size}
    datamodule: TextDataModule = instantiate(
        cfg.data, block_size=model.config.block_size, batch_size=cfg.batch_size, eval_batches=None
    )
    datamodule.prepare_data()
    if datamodule.meta["tokenizer"] != hparams["tokenizer"]:
        data_kind, ckpt_kind = datamodule.meta["tokenizer"]["kind"], hparams["tokenizer"]["kind"]
        raise ValueError(
            f"ckpt_path={path} was trained with another vocabulary ({ckpt_kind}, "
            f"{tokenizer.vocab_size} tokens) than data={datamodule.data_dir} ({data_kind}, "
            f"{datamodule.vocab_size} tokens); pass the data the model was trained on, "
            f"e.g. data=shakespeare_{'gpt2' if ckpt_kind == 'gpt2' else 'char'}"
        )
    datamodule.setup("validate")

    loss, n_tokens = val_loss(model, datamodule)
    meta = datamodule.meta
    bleu_score, _ = evaluate_bleu(model, tokenizer, split_tokens(datamodule.data_dir), bleu)
    result = {
        "ckpt_path": str(path),
        "val_tokens_scored": n_tokens,
        "loss": loss,
        "ppl": math.exp(loss),
        "bpc": loss * meta["val_tokens"] / meta["val_chars"] / math.log(2),
        "bleu": bleu_score,
        "bleu_recipe": {**OmegaConf.to_container(cfg.bleu, resolve=True), "tokenize": "13a"},
    }
    rows = [
        ("loss", f"{loss:.4f}"),
        ("perplexity", f"{result['ppl']:.3f}"),
        ("bits/char", f"{result['bpc']:.4f}"),
        ("BLEU", f"{bleu_score:.2f}"),
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
    evaluate(cfg)


if __name__ == "__main__":
    main()
