"""The config a run trains with: the composed config, with what it leaves to the run's facts filled in.

A composed config leaves some values to be decided by what the run finds: the model's shape when
it starts from a pretrained checkpoint (``model.init_from``), the vocabulary from the prepared
data, the gradient accumulation from ``data.global_batch_tokens``, the strategy of a sweep job that
starts several processes, and the checkpoint ``ckpt_path`` means. :func:`derive` decides them all
in one pure step, before anything sees the config: ``config.yaml``, the loggers' hyperparameters and
the objects ``train`` builds all get the same, final config.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from nanogpt.devices import processes_per_job
from nanogpt.hf.gpt2 import SHAPE_FIELDS, apply_pretrained_shape, hydra_value
from nanogpt.options import WARMUP_COSINE
from nanogpt.runs.checkpoint import TrainedOn
from nanogpt.schedule import fitted_warmup
from nanogpt.sweeps.launch import sweep_strategy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunFacts:
    """What a run finds out besides its config, and that decides some of its values."""

    vocab_size: int  # the prepared corpus' vocabulary
    pretrained_shape: dict[str, Any] | None = None  # model.init_from's shape fields, if any
    sweep_job: bool = False  # a job of nanogpt-train -m
    launched_outside: bool = False  # torchrun or srun started the ranks (nothing relaunches them)
    resume_from: Path | None = None  # the checkpoint file ckpt_path means, if any
    # what that checkpoint records of its run's data (None: no resume, or an older checkpoint)
    resumed: TrainedOn | None = None
    # whether the run compiles its training step: compile=auto decided (nanogpt.training.compiler.plan)
    compile: bool = False


def model_fields(
    model: DictConfig, pretrained_shape: dict[str, Any] | None = None, vocab_size: int | None = None
) -> dict:
    """The :class:`~nanogpt.model.GPTConfig` fields of ``model``: the pretrained checkpoint's shape
    where ``init_from`` fixes it, and ``vocab_size`` where the config leaves it null."""
    fields = OmegaConf.to_container(model, resolve=True)
    init_from = fields.pop("init_from", None)  # where the weights start from, not the architecture
    if pretrained_shape is not None:
        fields = apply_pretrained_shape(fields, pretrained_shape, str(init_from))
    if fields.get("vocab_size") is None and vocab_size is not None:
        fields["vocab_size"] = vocab_size
    return fields


def derive(cfg: DictConfig, facts: RunFacts) -> DictConfig:
    """``cfg`` with the values its run decides filled in; ``cfg`` itself is left as it was.

    - ``model.*``: the pretrained checkpoint's shape (``model.init_from``), and ``model.vocab_size``
      from the data when null;
    - ``trainer.accumulate_grad_batches`` from ``data.global_batch_tokens``, when that is set;
    - ``trainer.strategy`` of a sweep job that starts several processes (``ddp`` -> ``ddp_spawn``);
    - ``scheduler.warmup_steps`` of a run shorter than its warm-up: a tenth of the run
      (:func:`~nanogpt.schedule.fitted_warmup`, which warns);
    - ``compile``: true or false, what ``compile=auto`` decided (:mod:`nanogpt.training.compiler`);
    - ``ckpt_path``: the file it means (a run folder's ``last.ckpt``, or ``last``'s pick);
    - ``seed`` and ``data.seed`` of a resumed run: the checkpoint's, which drew its stream and its
      generators (a resume goes on with both), with a warning when the command asked for another.
    """
    out = copy.deepcopy(cfg)
    with open_dict(out):
        init_from = out.model.get("init_from")
        for key, value in model_fields(out.model, facts.pretrained_shape, facts.vocab_size).items():
            out.model[key] = value
        if init_from is not None:
            out.model.init_from = init_from
        if facts.pretrained_shape is not None:
            log.info(
                "model.init_from=%s: the model's shape is the checkpoint's: %s",
                init_from,
                ", ".join(f"{k}={hydra_value(facts.pretrained_shape[k])}" for k in SHAPE_FIELDS),
            )
        accumulation = derived_accumulation(out)
        if accumulation is not None:
            out.trainer.accumulate_grad_batches = accumulation
        if facts.sweep_job:
            strategy = sweep_strategy(out.trainer, launched_outside=facts.launched_outside)
            if strategy is not None:
                log.info(
                    "trainer.strategy=%s under nanogpt-train -m: Lightning's ddp launcher would re-run the "
                    "whole sweep in every rank, so this job starts its ranks with trainer.strategy=%s",
                    out.trainer.get("strategy") or "auto",
                    strategy,
                )
                out.trainer.strategy = strategy
        scheduler = out.get("scheduler")
        if scheduler is not None and scheduler.get("_target_") == WARMUP_COSINE:
            scheduler.warmup_steps = fitted_warmup(scheduler.warmup_steps, scheduler.decay_steps)
        out.compile = facts.compile
        if facts.resume_from is not None:
            out.ckpt_path = str(facts.resume_from)
        if facts.resumed is not None and out.data.seed != facts.resumed.seed:
            log.warning(
                "seed: this command asks for data.seed=%s, but ckpt_path=%s's run drew its training "
                "stream (and its random generators, which resume restores) from seed %s: the resumed "
                "run goes on with seed %s, as its config.yaml records. To train with seed %s, start a "
                "new run (without ckpt_path)",
                out.data.seed,
                out.ckpt_path,
                facts.resumed.seed,
                facts.resumed.seed,
                out.data.seed,
            )
            if out.seed == out.data.seed:  # data.seed follows seed (configs/data/text.yaml)
                out.seed = facts.resumed.seed
            out.data.seed = facts.resumed.seed
    return out


def derived_accumulation(cfg: DictConfig) -> int | None:
    """``trainer.accumulate_grad_batches`` for ``data.global_batch_tokens``; ``None`` when that is unset."""
    tokens = cfg.data.get("global_batch_tokens")
    if tokens is None:
        return None
    if (cfg.trainer.get("accumulate_grad_batches") or 1) != 1:
        raise ValueError(
            f"data.global_batch_tokens={tokens} sets trainer.accumulate_grad_batches, which is also set "
            f"(to {cfg.trainer.accumulate_grad_batches}); set one of them"
        )
    processes = processes_per_job(cfg.trainer)
    accumulation = accumulation_for(tokens, cfg.data.batch_size, cfg.data.block_size, processes)
    log.info(
        "data.global_batch_tokens=%s: accumulation %d = %s / (batch %d x context %d x %d processes)",
        f"{tokens:,}",
        accumulation,
        f"{tokens:,}",
        cfg.data.batch_size,
        cfg.data.block_size,
        processes,
    )
    return accumulation


def accumulation_for(global_batch_tokens: int, batch_size: int, block_size: int, processes: int) -> int:
    """Micro-batches per optimizer step so that one step sees ``global_batch_tokens`` tokens.

    Raises a ``ValueError`` naming the nearest valid values when it does not divide evenly.
    """
    if (
        isinstance(global_batch_tokens, bool)
        or not isinstance(global_batch_tokens, int)
        or global_batch_tokens < 1
    ):
        raise ValueError(
            f"data.global_batch_tokens must be a positive integer (tokens per optimizer step), got "
            f"{global_batch_tokens!r}; leave it null to set trainer.accumulate_grad_batches yourself"
        )
    micro = batch_size * block_size * processes  # tokens of one micro-batch on every process
    accumulation, remainder = divmod(global_batch_tokens, micro)
    if remainder or accumulation == 0:
        below = max(accumulation, 1) * micro
        nearest = f"{below:,} (accumulation {below // micro})"
        if accumulation >= 1:
            nearest += f" and {below + micro:,} (accumulation {below // micro + 1})"
        raise ValueError(
            f"data.global_batch_tokens={global_batch_tokens:,} is not a whole number of micro-batches: one "
            f"micro-batch on every process is {micro:,} tokens (data.batch_size {batch_size} x context "
            f"{block_size} x {processes} processes). The nearest valid values are {nearest}; or change "
            "data.batch_size"
        )
    return accumulation


def lightning_val_check_interval(trainer: DictConfig) -> Any:
    """Lightning's ``val_check_interval`` (in batches) for ours (in optimizer steps)."""
    interval = trainer.get("val_check_interval")
    accumulate = trainer.get("accumulate_grad_batches") or 1
    if isinstance(interval, int) and not isinstance(interval, bool):
        return interval * accumulate
    return interval  # a float is a fraction of an epoch, which an endless stream does not have
