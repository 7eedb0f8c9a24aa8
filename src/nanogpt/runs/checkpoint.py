"""Reading checkpoints: how a checkpoint file is opened, checked, and turned back into a model.

A checkpoint written by ``nanogpt-train`` describes itself: its hyperparameters hold the model's
config, the tokenizer's description and :data:`CHECKPOINT_FORMAT`, so sampling and evaluation need
no data folder and no config. Every checkpoint is read here, with ``weights_only=True``. Which file a
``ckpt_path`` means (a run folder, ``last``) is :func:`nanogpt.runs.folder.resolve_checkpoint`'s call;
writing them is :mod:`nanogpt.training.callbacks.checkpoints`'.

This module imports neither Lightning nor Hydra, so inference starts fast.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import torch

from nanogpt.data.tokenizer import Tokenizer, tokenizer_from_meta
from nanogpt.model import GPT, GPTConfig
from nanogpt.runs.folder import CHECKPOINTS, LAST_CKPT, resolve_checkpoint

CHECKPOINT_FORMAT = 1  # bump when the checkpoint layout changes incompatibly
MODEL_PREFIX = "model."  # the LightningModule's attribute holding the GPT prefixes its weights

log = logging.getLogger(__name__)


def read_checkpoint(path: str | os.PathLike, mmap: bool = False) -> dict[str, Any]:
    """Load a nanogpt checkpoint on the CPU and check its format.

    With ``mmap`` the tensors stay on disk until touched, so reading the metadata costs little.
    """
    try:
        ckpt = torch.load(path, map_location="cpu", mmap=mmap, weights_only=True)
    except Exception as err:
        others = [p for p in sorted(Path(path).parent.glob("*.ckpt")) if p != Path(path) and _loads(p)]
        fix = (
            f"{', '.join(map(str, others))} of the same folder load{'s' if len(others) == 1 else ''}: "
            f"pass ckpt_path={others[0]}"
            if others
            else f"pass a .ckpt file written by nanogpt-train, e.g. <run>/{CHECKPOINTS}/{LAST_CKPT}"
        )
        raise ValueError(
            f"ckpt_path={path} is not a readable checkpoint ({type(err).__name__}: truncated, or not a "
            f"checkpoint); {fix}"
        ) from err
    if isinstance(ckpt, dict) and {"model_args", "model", "iter_num"} <= ckpt.keys():
        raise ValueError(
            f"ckpt_path={path} is a checkpoint of karpathy/nanoGPT's train.py (iteration "
            f"{ckpt['iter_num']}), not of nanogpt-train: its tokenizer lives in nanoGPT's data folder "
            "(meta.pkl), not in the file. Sample it with nanoGPT's own sample.py "
            f"(python sample.py --out_dir={Path(path).parent}), or train here with nanogpt-train"
        )
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    version = hparams.get("format") if isinstance(hparams, dict) else None
    if version is None or "state_dict" not in ckpt:
        raise ValueError(
            f"ckpt_path={path} is not a nanogpt checkpoint (it names no checkpoint format); pass a "
            f".ckpt file written by nanogpt-train, e.g. <run>/{CHECKPOINTS}/{LAST_CKPT}"
        )
    if version != CHECKPOINT_FORMAT:
        raise ValueError(
            f"ckpt_path={path} has checkpoint format {version!r}, but this nanogpt reads format "
            f"{CHECKPOINT_FORMAT}; use the nanogpt version that wrote it, or retrain with this one"
        )
    return ckpt


def _loads(path: Path) -> bool:
    try:
        torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception:
        return False
    return True


def model_state_dict(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The GPT's own weights from a checkpoint's ``state_dict``; metrics' states are left out."""
    return {
        k.removeprefix(MODEL_PREFIX): v for k, v in ckpt["state_dict"].items() if k.startswith(MODEL_PREFIX)
    }


@dataclasses.dataclass(frozen=True)
class TrainedOn:
    """What a training checkpoint records of the data its run trained on, so that a resume can tell
    whether it goes on with the same stream: the corpus (:class:`~nanogpt.data.corpus.CorpusMeta`'s
    checksum, and its source in words) and what draws the training batches from it, ``data.seed``
    and ``data.batch_size`` (batch *i* is a function of the seed, the rank, *i* and the size).
    """

    corpus_checksum: str
    corpus_source: str
    seed: int
    batch_size: int

    KEY = "trained_on"  # of the checkpoint dict; checkpoints before it was recorded lack it

    @classmethod
    def saved_in(cls, ckpt: dict[str, Any]) -> TrainedOn | None:
        """The record in a checkpoint, or ``None`` for one written before nanogpt recorded it."""
        fields = ckpt.get(cls.KEY)
        return cls(**fields) if isinstance(fields, dict) else None

    @classmethod
    def read(cls, path: str | os.PathLike) -> TrainedOn | None:
        """The record in the checkpoint file ``path`` (its tensors are not read)."""
        return cls.saved_in(read_checkpoint(path, mmap=True))


def check_resumable(
    path: Path,
    model_config: GPTConfig,
    trained_on: TrainedOn | None = None,
    max_steps: int | None = None,
    allow_new_corpus: bool = False,
) -> None:
    """Refuse to resume from ``path`` unless it is a training checkpoint of this very model shape,
    with steps left to train before ``max_steps``, on the corpus it was trained on (unless
    ``allow_new_corpus``); warn when the training stream's seed or batch size changes.

    Checked before Lightning opens it, so a wrong file fails with the fix rather than deep inside ``fit()``.
    """
    ckpt = read_checkpoint(path, mmap=True)
    if "loops" not in ckpt or "optimizer_states" not in ckpt:
        raise ValueError(
            f"ckpt_path={path} holds weights but no training state (optimizer, step), so training "
            f"cannot continue from it; pass <run>/{CHECKPOINTS}/{LAST_CKPT}"
        )
    # through GPTConfig, so a field added since the checkpoint was written compares as its default
    saved = dataclasses.asdict(GPTConfig(**ckpt["hyper_parameters"]["model"]))
    wanted = dataclasses.asdict(model_config)
    # dropout does not change the weights' shapes; resuming with another one is a choice
    diff = {k: (saved.get(k), v) for k, v in wanted.items() if saved.get(k) != v and k != "dropout"}
    if diff:
        fixes = " ".join(f"model.{k}={old}" for k, (old, _) in diff.items())
        raise ValueError(
            f"ckpt_path={path} holds a different model ({diff}, saved vs asked); resume with {fixes}"
        )
    step = ckpt.get("global_step", 0)
    if max_steps is not None and 0 <= max_steps <= step:
        raise ValueError(
            f"ckpt_path={path} was saved at step {step}, and trainer.max_steps={max_steps} leaves nothing "
            f"to train: pass trainer.max_steps above {step} to train longer. The schedule follows "
            f"trainer.max_steps, so its cosine restarts over the new length; to go on at the run's final "
            f"rate, also pass scheduler.decay_steps=<the saved run's trainer.max_steps> (README: Resuming)"
        )
    if trained_on is not None:
        check_same_data(path, TrainedOn.saved_in(ckpt), trained_on, allow_new_corpus)


def check_same_data(path: Path, saved: TrainedOn | None, now: TrainedOn, allow_new_corpus: bool) -> None:
    """Refuse a resume on another corpus unless ``allow_new_corpus``; warn about another stream."""
    if saved is None:
        log.warning(
            "ckpt_path=%s does not record the data it was trained on (an older nanogpt wrote it): "
            "resuming on %s without checking that it is the same corpus, seed and batch size",
            path,
            now.corpus_source,
        )
        return
    if saved.corpus_checksum != now.corpus_checksum:
        if not allow_new_corpus:
            raise ValueError(
                f"ckpt_path={path} was trained on another corpus: {saved.corpus_source} (checksum "
                f"{saved.corpus_checksum[:12]}), not {now.corpus_source} (checksum "
                f"{now.corpus_checksum[:12]}); resume on the data it was trained on, or pass "
                "allow_new_corpus=true to go on training on this one"
            )
        log.info(
            "allow_new_corpus=true: ckpt_path=%s was trained on %s (checksum %s); this run goes on "
            "training it on %s (checksum %s)",
            path,
            saved.corpus_source,
            saved.corpus_checksum[:12],
            now.corpus_source,
            now.corpus_checksum[:12],
        )
    for key, old, new in [
        ("data.seed", saved.seed, now.seed),
        ("data.batch_size", saved.batch_size, now.batch_size),
    ]:
        if old != new:
            log.warning(
                "resuming with %s=%s, where ckpt_path=%s's run had %s: the resumed run draws other "
                "training batches than that run would have (batch i of the stream is a function of "
                "data.seed, the rank, i and data.batch_size); resume with %s=%s to continue its stream",
                key,
                new,
                path,
                old,
                key,
                old,
            )


def load_checkpoint(
    ckpt_path: str | os.PathLike | None, device: str | torch.device = "cpu"
) -> tuple[GPT, Tokenizer, dict[str, Any]]:
    """Return ``(model, tokenizer, hparams)`` for inference; a run folder means its ``best.ckpt``.

    The model is in eval mode on ``device``; ``"auto"`` means CUDA when there is one, else the CPU.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    path = resolve_checkpoint(ckpt_path, "best")
    ckpt = read_checkpoint(path)
    hparams = ckpt["hyper_parameters"]
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
    try:
        model.load_state_dict(model_state_dict(ckpt))
    except RuntimeError as err:
        raise ValueError(
            f"ckpt_path={path} holds weights that do not fit its own model config ({err}); "
            "it is from another nanogpt version, retrain with this one"
        ) from err
    return model.to(device).eval(), tokenizer, hparams
