"""Checks of user options whose errors name the override that fixes them."""

from __future__ import annotations

from typing import Any


def positive_int(value: Any, option: str) -> int:
    """``value`` if it is an integer >= 1; otherwise an error naming ``option``, e.g. ``model.n_layer``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{option} must be a positive integer, got {value!r}; set {option}=...")
    return value
