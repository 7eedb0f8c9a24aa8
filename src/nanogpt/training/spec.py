"""The run's spec: everything its build needs, derived once from the composed config and what the
run found.

A composed config leaves some values to what the run finds: the model's shape when it starts from a
pretrained checkpoint (``model.init_from``), the vocabulary from the prepared data, the gradient
accumulation from ``data.global_batch_tokens``, the strategy of a sweep job that starts several
processes, the checkpoint ``ckpt_path`` means, and whether ``compile: auto`` compiles.

- :func:`prepare_run` finds it out, before anything is built: it checks the options, reads
  ``cfg.model`` once into a :class:`~nanogpt.model.GPTConfig`, loads ``init_from``'s weights,
  prepares the corpus (local rank 0; the other ranks find it) and decides ``compile``:
  :class:`Prepared`.
- :func:`derive_spec` turns the config and that into a :class:`RunSpec`, in one pure step. Its
  ``cfg`` (the derived config) is what ``config.yaml`` records, what the loggers receive and what
  Hydra builds the trainer, data, optimizer, scheduler and callbacks from; its typed fields (the
  model, the corpus, the checkpoint, the trainer's settings) are what the build, the LightningModule,
  the parameter count and the FLOPs counter read. Nothing after it reads ``cfg.model`` again.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from nanogpt.data import Corpus, CorpusConfig, find_corpus, prepare_corpus
from nanogpt.devices import check_trainer_fits_machine, chosen_experiment, local_rank, processes_per_job
from nanogpt.hf.gpt2 import (
    SHAPE_FIELDS,
    apply_pretrained_shape,
    check_gpt2_tokenizer,
    hydra_value,
    load_pretrained,
    pretrained_shape,
)
from nanogpt.model import GPTConfig
from nanogpt.options import WARMUP_COSINE, check_options
from nanogpt.runs.checkpoint import TrainedOn
from nanogpt.runs.folder import RunDir, requeue_checkpoint, resolve_checkpoint
from nanogpt.schedule import fitted_warmup
from nanogpt.sweeps.launch import processes_start_outside, sweep_strategy
from nanogpt.training.compiler import choose_compile, on_cuda

log = logging.getLogger(__name__)

# how long the other ranks of a machine wait for local rank 0 to prepare the corpus (a large one
# takes a while; if rank 0 fails, torchrun and Lightning's launcher stop the others anyway)
CORPUS_WAIT_S = 3600.0


@dataclass(frozen=True)
class Prepared:
    """What preparing a run found besides its config (:func:`prepare_run`)."""

    model: GPTConfig  # cfg.model, with init_from's shape and (when null) the corpus' vocabulary
    corpus: Corpus  # the prepared corpus
    pretrained_shape: dict[str, Any] | None = None  # model.init_from's shape fields, if any
    pretrained: dict[str, torch.Tensor] | None = None  # init_from's weights (not for a resume)
    compile_marker: Path | None = None  # the compiled step's marker when the run compiles, else None
    sweep_job: bool = False  # a job of nanogpt-train -m
    launched_outside: bool = False  # torchrun or srun started the ranks (nothing relaunches them)
    resume_from: Path | None = None  # the checkpoint file ckpt_path means, if any
    # what that checkpoint records of its run's data (None: no resume, or an older checkpoint)
    resumed: TrainedOn | None = None
    requeued: bool = False  # a requeued SLURM job, back in its own folder


@dataclass(frozen=True)
class RunSpec:
    """What a run trains with, derived once (:func:`derive_spec`); see the module docstring."""

    cfg: DictConfig  # the derived config: config.yaml, the loggers' hyperparameters, the Hydra nodes
    model: GPTConfig
    corpus: Corpus
    trained_on: TrainedOn  # the corpus and the training stream, recorded in every checkpoint
    ckpt_path: Path | None  # the checkpoint file the run resumes from
    requeued: bool
    pretrained: dict[str, torch.Tensor] | None  # init_from's weights, loaded into the new model
    compile_marker: Path | None  # the compiled step's marker when the run compiles, else None
    processes: int  # training processes of the job: trainer.devices x trainer.num_nodes
    val_check_interval: Any  # Lightning's (in batches) for trainer.val_check_interval (optimizer steps)
    matmul_precision: str | None  # torch.set_float32_matmul_precision's, or None for torch's default

    @property
    def compile(self) -> bool:
        """Whether the run trains through ``torch.compile`` (``compile: auto`` decided)."""
        return self.compile_marker is not None


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


def prepare_run(cfg: DictConfig, run: RunDir, requeued: bool) -> Prepared:
    """What the run needs to know besides its config; see the module docstring.

    The options are checked, and the model's config built, before any data work, and a pretrained
    checkpoint is loaded before it too, so that a mistake or a missing download fails at once. The
    corpus is prepared once per machine: local rank 0 prepares it, and the other ranks (torchrun's,
    or those Lightning's launcher starts) find the folder it published.
    """
    check_options(cfg)
    init_from = cfg.model.get("init_from")
    shape = pretrained_shape(str(init_from)) if init_from else None
    fields = model_fields(cfg.model, shape)
    asked_vocab = fields.get("vocab_size")
    # the shape's options checked before the data; the vocabulary may wait for it
    model = GPTConfig(**{**fields, "vocab_size": 1 if asked_vocab is None else asked_vocab})
    if init_from:  # after the model's check, whose error names the whole command, data included
        check_gpt2_tokenizer(cfg.data.get("tokenizer"), str(init_from))
    check_trainer_fits_machine(cfg.trainer, chosen_experiment())
    resume = resume_from(cfg, run, requeued)
    # a resumed run (or a requeued one) has its weights in its own checkpoint
    pretrained = load_pretrained(str(init_from)) if init_from and not (resume or requeued) else None
    corpus_config = CorpusConfig.from_data(cfg.data)
    if local_rank() == 0:
        corpus = prepare_corpus(corpus_config)
    else:
        corpus = find_corpus(corpus_config, wait_s=CORPUS_WAIT_S)
    if asked_vocab is None:
        model = dataclasses.replace(model, vocab_size=corpus.vocab_size)
    elif shape is None and asked_vocab < corpus.vocab_size:
        raise ValueError(
            f"model.vocab_size={asked_vocab} is smaller than the data's vocabulary ({corpus.vocab_size} "
            f"tokens in {corpus.folder}); leave model.vocab_size=null to take the data's, or set it to at "
            f"least {corpus.vocab_size} (a multiple of 64 is faster on a GPU)"
        )
    return Prepared(
        model=model,
        corpus=corpus,
        pretrained_shape=shape,
        pretrained=pretrained,
        compile_marker=choose_compile(cfg, model),  # reads this machine's compile cache
        sweep_job=HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN,
        launched_outside=processes_start_outside(),
        resume_from=resume,
        resumed=TrainedOn.read(resume) if resume else None,
        requeued=requeued,
    )


def resume_from(cfg: DictConfig, run: RunDir, requeued: bool) -> Path | None:
    """The checkpoint file this run continues from, or ``None`` for a fresh start.

    ``ckpt_path`` as :func:`~nanogpt.runs.folder.resolve_checkpoint` reads it (``last``: the newest
    earlier run of this experiment); a requeued SLURM job without one continues in its own folder.
    """
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path is None and requeued:
        path = requeue_checkpoint(run)
        log.info("requeued SLURM job: resuming in %s from %s", run.path, path or "hpc_ckpt")
        return path
    if not ckpt_path:
        return None
    return resolve_checkpoint(ckpt_path, "last", runs_of=Path(cfg.paths.log_dir) / cfg.name, exclude=run.path)


def derive_spec(cfg: DictConfig, found: Prepared) -> RunSpec:
    """The spec of the run ``cfg`` describes, given what it ``found``; ``cfg`` itself is left as it was.

    Its ``cfg`` is the composed config with the values the run decides filled in:

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
        # the model's fields as the run trains them, under the keys the config gives (config.yaml
        # records what the command composed, with init_from's shape and the corpus' vocabulary)
        init_from = out.model.get("init_from")
        shape = found.pretrained_shape
        for key in [k for k in out.model if k != "init_from"] + list(shape or ()) + ["vocab_size"]:
            out.model[key] = getattr(found.model, key)
        if shape is not None:
            log.info(
                "model.init_from=%s: the model's shape is the checkpoint's: %s",
                init_from,
                ", ".join(f"{k}={hydra_value(shape[k])}" for k in SHAPE_FIELDS),
            )
        accumulation = derived_accumulation(out)
        if accumulation is not None:
            out.trainer.accumulate_grad_batches = accumulation
        if found.sweep_job:
            strategy = sweep_strategy(out.trainer, launched_outside=found.launched_outside)
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
        out.compile = found.compile_marker is not None
        if found.resume_from is not None:
            out.ckpt_path = str(found.resume_from)
        if found.resumed is not None and out.data.seed != found.resumed.seed:
            log.warning(
                "seed: this command asks for data.seed=%s, but ckpt_path=%s's run drew its training "
                "stream (and its random generators, which resume restores) from seed %s: the resumed "
                "run goes on with seed %s, as its config.yaml records. To train with seed %s, start a "
                "new run (without ckpt_path)",
                out.data.seed,
                out.ckpt_path,
                found.resumed.seed,
                found.resumed.seed,
                out.data.seed,
            )
            if out.seed == out.data.seed:  # data.seed follows seed (configs/data/text.yaml)
                out.seed = found.resumed.seed
            out.data.seed = found.resumed.seed
    return RunSpec(
        cfg=out,
        model=found.model,
        corpus=found.corpus,
        trained_on=TrainedOn(
            corpus_checksum=found.corpus.meta.checksum,
            corpus_source=found.corpus.meta.source,
            seed=out.data.seed,
            batch_size=out.data.batch_size,
        ),
        ckpt_path=found.resume_from,
        requeued=found.requeued,
        pretrained=found.pretrained,
        compile_marker=found.compile_marker,
        processes=processes_per_job(out.trainer),
        val_check_interval=lightning_val_check_interval(out.trainer),
        matmul_precision=matmul_precision(out),
    )


def matmul_precision(cfg: DictConfig) -> str | None:
    """``cfg.matmul_precision``, with ``auto`` meaning TF32 ("high") on CUDA and torch's default elsewhere."""
    precision = cfg.get("matmul_precision")
    if precision != "auto":
        return precision
    return "high" if on_cuda(cfg.trainer) else None


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
