"""Load a trained model for inference from a checkpoint alone: weights, shape and tokenizer.

Every checkpoint written by ``nanogpt-train`` carries the model's config and the tokenizer's
description in its hyperparameters, so sampling and evaluation need no data folder and no config.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from nanogpt.data import Tokenizer, tokenizer_from_meta
from nanogpt.lightning_module import CHECKPOINT_FORMAT
from nanogpt.model import GPT, GPTConfig


def resolve_checkpoint(ckpt_path: str | os.PathLike | None) -> Path:
    """A checkpoint file, or a run folder meaning its ``checkpoints/best.ckpt``."""
    if ckpt_path is None or str(ckpt_path) == "":
        raise FileNotFoundError(
            "no checkpoint given; pass ckpt_path=runs/<experiment>/<time>/checkpoints/best.ckpt "
            "(or the run folder runs/<experiment>/<time>)"
        )
    path = Path(ckpt_path).expanduser()
    if path.is_dir():
        best = path / "checkpoints" / "best.ckpt"
        if not best.is_file():
            raise FileNotFoundError(
                f"ckpt_path={ckpt_path} is a folder without checkpoints/best.ckpt; pass a run folder "
                "written by nanogpt-train or a .ckpt file"
            )
        return best
    if not path.is_file():
        raise FileNotFoundError(
            f"ckpt_path={ckpt_path} does not exist; pass a checkpoint file or run folder, "
            "e.g. ckpt_path=runs/<experiment>/<time>/checkpoints/best.ckpt"
        )
    return path


def load_checkpoint(
    ckpt_path: str | os.PathLike | None, device: str | torch.device = "cpu"
) -> tuple[GPT, Tokenizer, dict[str, Any]]:
    """Return ``(model, tokenizer, hparams)`` from a checkpoint or run folder.

    The model is in eval mode on ``device``; ``"auto"`` means CUDA when there is one, else the CPU.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    path = resolve_checkpoint(ckpt_path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"ckpt_path={path} is not a readable checkpoint ({type(err).__name__}); pass a .ckpt file "
            "written by nanogpt-train, e.g. <run>/checkpoints/best.ckpt"
        ) from err
    hparams = ckpt.get("hyper_parameters", {}) if isinstance(ckpt, dict) else {}
    version = hparams.get("format")
    if version != CHECKPOINT_FORMAT or "state_dict" not in ckpt:
        raise ValueError(
            f"ckpt_path={path} has checkpoint format {version!r}, but this nanogpt reads format "
            f"{CHECKPOINT_FORMAT}; use the nanogpt version that wrote it, or retrain with this one"
        )
    config = GPTConfig(**hparams["model"])
    meta = hparams.get("tokenizer")
    if not isinstance(meta, dict):
        raise ValueError(
            f"ckpt_path={path} does not describe its tokenizer, so its tokens cannot be decoded; "
            "retrain with nanogpt-train, which stores it"
        )
    tokenizer = tokenizer_from_meta(meta)
    if tokenizer.vocab_size > config.vocab_size:
        raise ValueError(
            f"ckpt_path={path} pairs a {config.vocab_size}-token model with a {tokenizer.vocab_size}-token "
            f"{meta.get('kind')} vocabulary; the checkpoint is from another vocabulary and cannot be used"
        )
    model = GPT(config)
    # Lightning prefixes the model's weights with its attribute name; metrics' states are not ours.
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(
            f"ckpt_path={path} holds weights that do not fit its own model config ({err}); "
            "it is from another nanogpt version, retrain with this one"
        ) from err
    return model.to(device).eval(), tokenizer, hparams
