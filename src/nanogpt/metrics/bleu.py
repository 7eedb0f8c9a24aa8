"""BLEU and chrF of the model's continuations of fixed val-split prompts against the true continuations.

The recipe: ``num_prompts`` windows at evenly spaced, fixed positions of the val tokens; the first
``prompt_tokens`` of each are the prompt and the next ``continuation_tokens`` the reference. The
model continues each prompt (greedy by default), and both texts are decoded, which makes the scores
comparable between char and BPE models. Both scores are sacrebleu's own, on its 0-100 scale:

- **BLEU**: corpus BLEU, sacrebleu's ``13a`` word tokenizer, word n-grams up to ``n_gram`` (4), and
  with ``smooth`` (the default) sacrebleu's default ``exp`` smoothing: the k-th n-gram order with no
  match at all counts as precision ``1 / (2**k * its n-gram count)`` instead of 0 (Chen & Cherry
  2014, method 3; the smoothing of NIST's mteval-v13a.pl). sacrebleu's signature is
  ``nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp``, so ``sacrebleu.corpus_bleu(continuations,
  [references])`` with its defaults gives the same number. The score is 0 only while no word of any
  continuation matches its reference, and otherwise rises as the model gets words, then word pairs,
  right. ``smooth=False`` is plain BLEU (``smooth:none``), which is exactly 0 until some
  continuation shares an ``n_gram``-word sequence with its reference, so a weak model reads 0 for
  its whole run.
- **chrF**: chrF2 of :mod:`nanogpt.metrics.chrf` (character 6-grams, beta 2), on the same texts.

sacrebleu computes BLEU rather than torchmetrics' ``SacreBLEUScore``: that one's ``smooth=True`` is
Lin & Och's add-one on the orders above 1 (sacrebleu's ``add-k`` with k=1), but it returns 0 before
smoothing as soon as one order has no match (torchmetrics 1.9), so it reads 0 exactly when
smoothing is needed. Unsmoothed, the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sacrebleu.metrics import BLEU

from nanogpt.data import Tokenizer
from nanogpt.metrics.chrf import chrf_metric, sentence_chrf
from nanogpt.model import GPT, check_sampling
from nanogpt.options import positive_int

# sacrebleu's word tokenizer that BLEU uses; recorded beside the recipe in nanogpt-eval's JSON
TOKENIZE = "13a"


@dataclass
class BleuSettings:
    """How BLEU and chrF are measured; see the module docstring for the recipe.

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
    smooth: bool = True  # sacrebleu's default exp smoothing; False: plain BLEU, 0 until an n_gram match

    def __post_init__(self) -> None:
        for name in ("num_prompts", "prompt_tokens", "continuation_tokens", "n_gram"):
            positive_int(getattr(self, name), f"bleu.{name}")
        check_sampling(self.temperature, self.top_k, self.top_p)
        if not isinstance(self.smooth, bool):
            raise ValueError(f"bleu.smooth must be true or false, got {self.smooth!r}")

    @property
    def smooth_method(self) -> str:
        """sacrebleu's name for the smoothing: ``exp`` or ``none``."""
        return "exp" if self.smooth else "none"


@dataclass
class BleuSample:
    prompt: str
    reference: str
    continuation: str
    chrf: float  # this continuation's own chrF; the corpus chrF sums counts, so it is not their mean


@dataclass
class BleuResult:
    bleu: float
    chrf: float
    samples: list[BleuSample]
    bleu_signature: str  # sacrebleu's, e.g. nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0
    chrf_signature: str


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


def bleu_metric(n_gram: int = 4, smooth: bool = True) -> BLEU:
    """sacrebleu's BLEU as the recipe uses it: 13a tokens, up to ``n_gram``-grams, exp smoothing or none."""
    return BLEU(tokenize=TOKENIZE, smooth_method="exp" if smooth else "none", max_ngram_order=n_gram)


def corpus_bleu(predictions: list[str], references: list[str], n_gram: int = 4, smooth: bool = True) -> float:
    """Corpus BLEU of ``predictions`` against one reference each, 0-100 (see the module docstring)."""
    return bleu_metric(n_gram, smooth).corpus_score(predictions, [references]).score


@torch.no_grad()
def evaluate_bleu(model: GPT, tokenizer: Tokenizer, tokens: np.ndarray, settings: BleuSettings) -> BleuResult:
    """Score ``model`` on prompts from ``tokens`` (the val split): BLEU, chrF and the samples scored."""
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
    texts = [
        (tokenizer.decode(p), tokenizer.decode(r), tokenizer.decode(c))
        for p, r, c in zip(
            prompts.tolist(), references.tolist(), out[:, settings.prompt_tokens :].tolist(), strict=True
        )
    ]
    samples = [BleuSample(p, r, c, sentence_chrf(c, r)) for p, r, c in texts]
    continuations, refs = [s.continuation for s in samples], [[s.reference for s in samples]]
    bleu, chrf = bleu_metric(settings.n_gram, settings.smooth), chrf_metric()
    return BleuResult(
        bleu=bleu.corpus_score(continuations, refs).score,
        chrf=chrf.corpus_score(continuations, refs).score,
        samples=samples,
        bleu_signature=str(bleu.get_signature()),
        chrf_signature=str(chrf.get_signature()),
    )
