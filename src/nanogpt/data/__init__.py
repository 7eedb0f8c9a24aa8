"""Text in, token windows out.

``tokenizer`` (text <-> ids) -> ``prepare`` (text file -> a folder of token memmaps named by the
text's md5 and the tokenizer, built once) -> ``windows`` (memmaps -> batches) -> ``datamodule``
(the LightningDataModule that serves them).
"""

from nanogpt.data.prepare import find_corpus, prepare_corpus
from nanogpt.data.tokenizer import CharTokenizer, GPT2Tokenizer, Tokenizer, tokenizer_from_meta
from nanogpt.data.windows import EvalWindows, TrainWindows

__all__ = [
    "CharTokenizer",
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
    # The DataModule pulls in Lightning; import it only when asked, so plain-PyTorch users of
    # the tokenizers and windows (scripts, notebooks) start fast.
    if name == "TextDataModule":
        from nanogpt.data.datamodule import TextDataModule

        return TextDataModule
    raise AttributeError(f"module 'nanogpt.data' has no attribute {name!r}")
