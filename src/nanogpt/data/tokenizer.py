"""Tokenizers: characters, or GPT-2's byte-pair encoding through tiktoken.

A tokenizer is fully described by a small JSON-able dict (``meta``), which is stored beside the
token files and inside every checkpoint, so text can be decoded without the data folder.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

TOKENIZERS = ("char", "gpt2")


class Tokenizer(Protocol):
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def meta(self) -> dict: ...


class CharTokenizer:
    """One token per distinct character of the training text, in sorted order (as in nanoGPT)."""

    def __init__(self, vocab: list[str]) -> None:
        self.vocab = list(vocab)
        self.vocab_size = len(self.vocab)
        self._stoi = {ch: i for i, ch in enumerate(self.vocab)}

    @classmethod
    def from_text(cls, text: Iterable[str]) -> CharTokenizer:
        return cls(sorted(set(text)))

    def encode(self, text: str) -> list[int]:
        unknown = sorted(set(text) - self._stoi.keys())
        if unknown:
            raise ValueError(
                f"characters {unknown!r} are not in this model's {self.vocab_size}-character vocabulary; "
                "remove them from the text"
            )
        return [self._stoi[ch] for ch in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.vocab[i] for i in ids)

    def meta(self) -> dict:
        return {"kind": "char", "vocab_size": self.vocab_size, "vocab": self.vocab}


class GPT2Tokenizer:
    """GPT-2's 50257-token BPE. tiktoken reads its files from ``TIKTOKEN_CACHE_DIR`` when offline."""

    def __init__(self) -> None:
        import tiktoken

        try:
            self._enc = tiktoken.get_encoding("gpt2")
        except Exception as err:  # tiktoken raises plain requests/OS errors when it cannot download
            raise RuntimeError(
                "could not load GPT-2's BPE files for tiktoken (no network?). Put vocab.bpe and "
                "encoder.json in tiktoken's cache and set TIKTOKEN_CACHE_DIR=/path/to/tiktoken-cache"
            ) from err
        self.vocab_size = self._enc.n_vocab
        self.eot_token = self._enc.eot_token

    def encode(self, text: str) -> list[int]:
        return self._enc.encode_ordinary(text)

    def decode(self, ids: list[int]) -> str:
        return self._enc.decode(ids)

    def meta(self) -> dict:
        return {"kind": "gpt2", "vocab_size": self.vocab_size}


def build_tokenizer(kind: str, chars: Iterable[str]) -> Tokenizer:
    """The tokenizer ``kind`` for a text; ``chars`` is the text, or just its distinct characters."""
    if kind == "char":
        return CharTokenizer.from_text(chars)
    if kind == "gpt2":
        return GPT2Tokenizer()
    raise ValueError(f"unknown tokenizer {kind!r}; use data.tokenizer=char or data.tokenizer=gpt2")


def tokenizer_from_meta(meta: dict) -> Tokenizer:
    """Rebuild the tokenizer that ``Tokenizer.meta()`` described."""
    if meta.get("kind") == "char":
        return CharTokenizer(meta["vocab"])
    if meta.get("kind") == "gpt2":
        return GPT2Tokenizer()
    raise ValueError(f"unknown tokenizer description {meta!r}")
