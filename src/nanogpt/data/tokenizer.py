"""Tokenizers: characters, or GPT-2's byte-pair encoding through tiktoken.

A tokenizer is fully described by a small JSON-able dict (``meta``), which is stored beside the
token files and inside every checkpoint, so text can be decoded without the data folder.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


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


class TiktokenTokenizer:
    """A BPE encoding of ``tiktoken`` by name (``gpt2``, ``cl100k_base``, ...).

    tiktoken downloads an encoding's files once into its cache; offline it reads them from
    ``TIKTOKEN_CACHE_DIR``.
    """

    def __init__(self, name: str) -> None:
        import tiktoken

        known = tiktoken.list_encoding_names()
        if name not in known:
            raise ValueError(
                f"unknown tokenizer {name!r}; use data.tokenizer=char, or a tiktoken encoding: "
                + ", ".join(f"data.tokenizer={k}" for k in known)
            )
        try:
            self._enc = tiktoken.get_encoding(name)
        except Exception as err:  # tiktoken raises plain requests/OS errors when it cannot download
            raise ConnectionError(
                f"could not load the BPE files of tiktoken's {name!r} encoding (no network?). Put them in "
                "tiktoken's cache and set TIKTOKEN_CACHE_DIR=/path/to/tiktoken-cache"
            ) from err
        self.name = name
        self.vocab_size = self._enc.n_vocab
        self.eot_token = self._enc.eot_token

    def encode(self, text: str) -> list[int]:
        return self._enc.encode_ordinary(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self._enc.encode_ordinary_batch(texts, num_threads=1)

    def decode(self, ids: list[int]) -> str:
        # A model's vocabulary may be padded past the encoding's (GPT-2's 50257 to 50304, for faster
        # matmuls); an untrained model can pick such an id, which has no text: it reads as U+FFFD.
        text, run = [], []
        for i in ids:
            if i < self.vocab_size:
                run.append(i)
            else:
                text += [self._enc.decode(run), "\ufffd"]
                run = []
        return "".join([*text, self._enc.decode(run)])

    def meta(self) -> dict:
        return {"kind": "tiktoken", "encoding": self.name, "vocab_size": self.vocab_size}


class GPT2Tokenizer(TiktokenTokenizer):
    """GPT-2's 50257-token BPE, the tokenizer of nanoGPT's BPE recipes and of pretrained GPT-2."""

    def __init__(self) -> None:
        super().__init__("gpt2")

    def meta(self) -> dict:
        return {"kind": "gpt2", "vocab_size": self.vocab_size}


def build_tokenizer(kind: str, chars: Iterable[str]) -> Tokenizer:
    """The tokenizer ``kind`` for a text; ``chars`` is the text, or just its distinct characters.

    ``kind`` is ``char`` (a vocabulary of the text's characters), ``gpt2``, or any tiktoken encoding.
    """
    if kind == "char":
        return CharTokenizer.from_text(chars)
    if kind == "gpt2":
        return GPT2Tokenizer()
    return TiktokenTokenizer(kind)


def check_tokenizer_name(kind: str) -> None:
    """Refuse an unknown tokenizer before any work, listing the names that exist."""
    if kind not in ("char", "gpt2"):
        import tiktoken

        if kind not in tiktoken.list_encoding_names():
            TiktokenTokenizer(kind)  # raises the error that lists the names


def tokenizer_from_meta(meta: dict) -> Tokenizer:
    """Rebuild the tokenizer that ``Tokenizer.meta()`` described."""
    if meta.get("kind") == "char":
        return CharTokenizer(meta["vocab"])
    if meta.get("kind") == "gpt2":
        return GPT2Tokenizer()
    if meta.get("kind") == "tiktoken":
        return TiktokenTokenizer(meta["encoding"])
    raise ValueError(f"unknown tokenizer description {meta!r}")
