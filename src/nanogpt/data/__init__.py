"""Text in, token windows out: tokenizers, one-time preparation, and the LightningDataModule."""

from nanogpt.data.datamodule import TextDataModule
from nanogpt.data.prepare import prepare_corpus
from nanogpt.data.tokenizer import CharTokenizer, GPT2Tokenizer, Tokenizer, tokenizer_from_meta

__all__ = [
    "CharTokenizer",
    "GPT2Tokenizer",
    "TextDataModule",
    "Tokenizer",
    "prepare_corpus",
    "tokenizer_from_meta",
]
