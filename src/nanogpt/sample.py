"""``nanogpt-sample``: continue a prompt with a trained model, streaming tokens to the terminal.

``sample(cfg)`` is the whole job; the console script is :mod:`nanogpt.cli.sample`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

import torch
from omegaconf import DictConfig

from nanogpt.data import Tokenizer
from nanogpt.devices import inference_device
from nanogpt.model import check_sampling
from nanogpt.options import positive_int
from nanogpt.runs.checkpoint import load_checkpoint

FILE_PREFIX = "FILE:"


def read_prompt(prompt: str | None) -> str:
    """The prompt text; ``FILE:path.txt`` reads it from a file."""
    prompt = "" if prompt is None else str(prompt)
    if not prompt.startswith(FILE_PREFIX):
        return prompt
    path = Path(prompt[len(FILE_PREFIX) :]).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"prompt={prompt}: no file at {path}; pass prompt=FILE:/path/to/prompt.txt")
    return path.read_text(encoding="utf-8")


def encode_prompt(text: str, tokenizer: Tokenizer) -> tuple[list[int], str | None]:
    """Token ids of the prompt, and a note saying what an empty prompt was replaced by."""
    if text:
        try:
            return tokenizer.encode(text), None
        except ValueError as err:  # the char tokenizer names the unknown characters
            raise ValueError(f"the prompt cannot be encoded: {err}") from None
    if tokenizer.meta()["kind"] == "gpt2":
        return [tokenizer.eot_token], "empty prompt: starting from the <|endoftext|> token"
    try:
        return tokenizer.encode("\n"), "empty prompt: starting from a newline"
    except ValueError:
        raise ValueError(
            "the prompt is empty and this model's vocabulary has no newline to start from; "
            'pass a prompt, e.g. prompt="ROMEO:"'
        ) from None


class StreamPrinter:
    """An ``on_token`` hook that prints a single sequence's text as its tokens arrive."""

    def __init__(self, tokenizer: Tokenizer, out: TextIO) -> None:
        self.tokenizer = tokenizer
        self.out = out
        self.ids: list[int] = []
        self.shown = ""

    def __call__(self, next_ids: torch.Tensor) -> None:
        self.ids.append(next_ids.item())
        # Decode everything so far: a BPE token may end in the middle of a UTF-8 character,
        # which decodes to U+FFFD until the rest of it arrives.
        text = self.tokenizer.decode(self.ids)
        if not text.endswith("\ufffd"):
            self.out.write(text[len(self.shown) :])
            self.out.flush()
            self.shown = text

    def finish(self) -> str:
        text = self.tokenizer.decode(self.ids)
        self.out.write(text[len(self.shown) :] + "\n")
        self.out.flush()
        return text


def sample(cfg: DictConfig, out: TextIO | None = None) -> list[str]:
    """Print ``cfg.num_samples`` continuations of ``cfg.prompt`` as they are generated; return them."""
    out = out or sys.stdout
    check_sampling(cfg.temperature, cfg.top_k, cfg.top_p)
    positive_int(cfg.num_samples, "num_samples")
    positive_int(cfg.max_new_tokens, "max_new_tokens")
    model, tokenizer, _ = load_checkpoint(cfg.ckpt_path, inference_device(cfg.device))
    device = model.lm_head.weight.device
    ids, note = encode_prompt(read_prompt(cfg.prompt), tokenizer)
    if note:
        print(note, file=sys.stderr)
    generator = torch.Generator(device).manual_seed(cfg.seed)
    prompt = torch.tensor([ids], dtype=torch.long, device=device)  # (1, T)

    texts = []
    for i in range(cfg.num_samples):
        if i:
            print("\n---------------", file=out)
        out.write(tokenizer.decode(ids))
        printer = StreamPrinter(tokenizer, out)
        model.generate(
            prompt,
            cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_k=cfg.top_k,
            top_p=cfg.top_p,
            generator=generator,
            on_token=printer,
        )
        texts.append(tokenizer.decode(ids) + printer.finish())
    return texts
