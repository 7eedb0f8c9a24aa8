"""Text in, token windows out.

Every corpus takes one path (:mod:`nanogpt.data.prepare` drives it)::

    sources (a text file or its download, files and globs, datasets' builders, a saved dataset,
             the Hub: documents, and a checksum of them)
      -> encode (documents joined by the tokenizer's separator, split at the last val_fraction of
                 the characters, tokenized by ``tokenizer``: train.bin and val.bin)
      -> corpus (the prepared folder, named by tokenizer, checksum and val fraction, published
                 whole, checked against its typed meta.json: a Corpus)
      -> windows (memmaps -> batches) -> datamodule (the LightningDataModule that serves them)

:func:`prepare_corpus` builds a corpus' folder once; :func:`find_corpus` only looks for it (DDP
ranks other than local rank 0, optionally waiting for rank 0). Both take a :class:`CorpusConfig`,
e.g. ``CorpusConfig.from_data(cfg.data)``, and return a :class:`Corpus`.
"""

from nanogpt.data.corpus import Corpus, CorpusMeta
from nanogpt.data.prepare import CorpusConfig, find_corpus, prepare_corpus
from nanogpt.data.tokenizer import CharTokenizer, GPT2Tokenizer, Tokenizer, tokenizer_from_meta

__all__ = [
    "CharTokenizer",
    "Corpus",
    "CorpusConfig",
    "CorpusMeta",
    "EvalWindows",
    "GPT2Tokenizer",
    "TextDataModule",
    "Tokenizer",
    "TrainWindows",
    "find_corpus",
    "prepare_corpus",
    "tokenizer_from_meta",
]


def __getattr__(name: str):
    # The windows pull in torch, and the DataModule Lightning: import them only when asked, so users
    # of the tokenizers (scripts, notebooks) and the tokenizing worker processes start fast.
    if name in ("EvalWindows", "TrainWindows"):
        from nanogpt.data import windows

        return getattr(windows, name)
    if name == "TextDataModule":
        from nanogpt.data.datamodule import TextDataModule

        return TextDataModule
    raise AttributeError(f"module 'nanogpt.data' has no attribute {name!r}")
