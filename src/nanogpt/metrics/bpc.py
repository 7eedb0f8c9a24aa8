"""Bits per character: a loss that does not depend on the tokenizer, so char and BPE runs compare."""

from __future__ import annotations

import math

from nanogpt.data.corpus import CorpusMeta


def bpc_per_nat(meta: CorpusMeta, split: str = "val") -> float | None:
    """Bits per character per nat of per-token loss on a prepared split: tokens per character / ln 2.

    ``meta`` is the corpus' ``meta.json``; None when the split has no characters.
    """
    chars = getattr(meta, f"{split}_chars")
    if not chars:
        return None
    return getattr(meta, f"{split}_tokens") / chars / math.log(2)
