"""chrF, the character n-gram F-score, exactly as sacrebleu computes it with its defaults.

chrF2 (Popović, 2015) as ``sacrebleu.corpus_chrf`` scores it: character n-grams of orders 1 to 6,
no word n-grams (``nw:0``, so not chrF++), whitespace removed before counting (``space:no``), and
beta 2 (recall weighs twice as much as precision). The corpus score sums every segment's n-gram
counts, averages precision and recall over the orders, and takes their F-beta, on the 0-100 scale;
sacrebleu's signature is ``nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no``.

It credits partly right words (``Romeo``/``Rome``) that BLEU's word n-grams miss, so it rises from
the first steps of a char model, and a tokenizer plays no part in it.

sacrebleu computes it rather than torchmetrics' ``CHRFScore``: that one keeps newlines as
characters (it removes spaces only) and averages the per-order F-scores (sacrebleu's
``eps_smoothing=True``), so on the CPU recipe's continuations it is off from sacrebleu's score by
up to 0.2 (torchmetrics 1.9).
"""

from __future__ import annotations

from sacrebleu.metrics import CHRF


def chrf_metric() -> CHRF:
    """sacrebleu's chrF with its defaults: char order 6, word order 0, beta 2, whitespace ignored."""
    return CHRF(char_order=6, word_order=0, beta=2, whitespace=False, eps_smoothing=False)


def corpus_chrf(predictions: list[str], references: list[str]) -> float:
    """chrF2 of ``predictions`` against one reference each, from summed n-gram counts, 0-100."""
    return chrf_metric().corpus_score(predictions, [references]).score


def sentence_chrf(prediction: str, reference: str) -> float:
    """chrF2 of one prediction alone, 0-100; a corpus's chrF is not the mean of these."""
    return chrf_metric().sentence_score(prediction, [reference]).score
