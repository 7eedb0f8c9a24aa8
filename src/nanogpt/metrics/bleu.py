"""BLEU of the model's continuations of fixed val-split prompts against the true continuations.

The recipe: ``num_prompts`` windows at evenly spaced, fixed positions of the val tokens; the first
``prompt_tokens`` of each are the prompt and the next ``continuation_tokens`` the reference. The
model continues each prompt (greedy by default), both texts are decoded, and corpus BLEU is
computed by torchmetrics' ``SacreBLEUScore``: sacrebleu's ``13a`` word tokenizer, n-grams up to
``n_gram`` (4), no smoothing, reported on sacrebleu's 0-100 scale. Decoding to text first makes the
score comparable between char and BPE models. Without smoothing the score is exactly 0 until at least
one continuation shares an ``n_gram``-word sequence with its reference, which a weak model rarely
does; a lower ``n_gram`` shows progress earlier.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchmetrics.text import SacreBLEUScore

from nanogpt.data import Tokenizer
from nanogpt.data.prepare import TOKEN_DTYPE
from nanogpt.model import GPT, check_sampling
from nanogpt.options import positive_int


@dataclass
class BleuSettings:
    """How BLEU is measured; see the module docstring for the recipe.

    These defaults are the recipe; ``configs/bleu/default.yaml`` states them for Hydra, and a test
    keeps the two equal.
    """

    num_prompts: int = 32
    prompt_tokens: int = 64
    continuation_tokens: int = 64
    temperature: float = 0.0  # 0 is greedy, so the score does not depend on a seed
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0  # seeds sampling when temperature > 0
    n_gram: int = 4  # the longest word sequence counted, as in standard BLEU

    def __post_init__(self) -> None:
        for name in ("num_prompts", "prompt_tokens", "continuation_tokens", "n_gram"):
            positive_int(getattr(self, name), f"bleu.{name}")
        check_sampling(self.temperature, self.top_k, self.top_p)


@dataclass
class BleuSample:
    prompt: str
    reference: str
    continuation: str


def split_tokens(data_dir: str | os.PathLike, split: str = "val") -> np.ndarray:
    """The token ids of a prepared split, memory-mapped."""
    return np.memmap(Path(data_dir) / f"{split}.bin", dtype=TOKEN_DTYPE, mode="r")


def bleu_prompts(tokens: np.ndarray, settings: BleuSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts (N, P) and their true continuations (N, C) at fixed, evenly spaced positions."""
    window = settings.prompt_tokens + settings.continuation_tokens
    if len(tokens) < window:
        raise ValueError(
            f"the val split has {len(tokens)} tokens, fewer than prompt_tokens + continuation_tokens = "
            f"{window}; lower the BLEU prompt_tokens or continuation_tokens"
        )
    starts = np.linspace(0, len(tokens) - window, settings.num_prompts).astype(np.int64)
    windows = torch.from_numpy(np.stack([tokens[s : s + window] for s in starts]).astype(np.int64))
    return windows[:, : settings.prompt_tokens], windows[:, settings.prompt_tokens :]


def corpus_bleu(predictions: list[str], references: list[str], n_gram: int = 4) -> float:
    """SacreBLEU (13a tokens, up to ``n_gram``-grams) of ``predictions`` against one reference each, 0-100."""
    metric = SacreBLEUScore(n_gram=n_gram, tokenize="13a")
    return 100.0 * metric(predictions, [[r] for r in references]).item()


@torch.no_grad()
def evaluate_bleu(
    model: GPT, tokenizer: Tokenizer, tokens: np.ndarray, settings: BleuSettings
) -> tuple[float, list[BleuSample]]:
    """Score ``model`` on prompts from ``tokens`` (the val split); return BLEU and the samples."""
    prompts, references = bleu_prompts(tokens, settings)
    device = model.lm_head.weight.device
    generator = torch.Generator(device).manual_seed(settings.seed)
    was_training = model.training
    model.eval()
    out = model.generate(
        prompts.to(device),
        settings.continuation_tokens,
        temperature=settings.temperature,
        top_k=settings.top_k,
        top_p=settings.top_p,
        generator=generator,
    )
    model.train(was_training)
    continuations = out[:, settings.prompt_tokens :].tolist()
    samples = [
        BleuSample(tokenizer.decode(p), tokenizer.decode(r), tokenizer.decode(c))
        for p, r, c in zip(prompts.tolist(), references.tolist(), continuations, strict=True)
    ]
    score = corpus_bleu([s.continuation for s in samples], [s.reference for s in samples], settings.n_gram)
    return score, samples
