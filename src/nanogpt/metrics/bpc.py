"""Bits per character: a loss that does not depend on the tokenizer, so char and BPE runs compare."""

from __future__ import annotations

import math
from typing import Any


def bpc_per_nat(meta: dict[str, Any], split: str = "val") -> float | None:
    """Bits per character per nat of per-token loss on a prepared split: tokens per character / ln 2.

    ``meta`` is the corpus' ``meta.json``; None when it does not count the split's characters.
    """
    chars = meta.get(f"{split}_chars")
    if not chars:
        return None
    return meta[f"{split}_tokens"] / chars / math.log(2)
