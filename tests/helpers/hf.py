"""What the Hugging Face tests (``test_gpt2_hf.py``, ``test_hf_llama.py``) share: random tiny models
saved as nanogpt-train saves a checkpoint, and a prompt."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from nanogpt.model import GPT, GPTConfig
from nanogpt.runs.checkpoint import CHECKPOINT_FORMAT, MODEL_PREFIX

SAMPLE = "ROMEO: But, soft! what light through yonder window breaks?\nJULIET: O Romeo, Romeo!"


def random_gpt(seed: int = 0, **fields) -> GPT:
    """A tiny GPT of ``fields`` whose every weight, gain and bias is random, so that a weight exported
    to the wrong place (a gain for a bias, a layer for another) shows in the logits."""
    config = GPTConfig(**{**dict(block_size=16, vocab_size=64, n_layer=2, n_head=4, n_embd=32), **fields})
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = GPT(config)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def write_checkpoint(model: GPT, path: Path, tokenizer: dict | None = None) -> Path:
    """``model`` saved as nanogpt-train saves a checkpoint's weights and hyperparameters (no training
    state), with a character vocabulary of all but the last 14 rows unless ``tokenizer`` says otherwise."""
    if tokenizer is None:
        vocab = [chr(ord("!") + i) for i in range(model.config.vocab_size - 14)]  # past it: padding rows
        tokenizer = {"kind": "char", "vocab_size": len(vocab), "vocab": vocab}
    hparams = {"model": dataclasses.asdict(model.config), "tokenizer": tokenizer, "format": CHECKPOINT_FORMAT}
    state = {MODEL_PREFIX + k: v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": hparams}, path)
    return path
