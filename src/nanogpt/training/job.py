"""The training job: from a composed config to a trained run folder.

``train(cfg)`` is the whole job, and what the console script (:mod:`nanogpt.cli.train`), sweeps and
tests call. It knows no command line: Hydra composed ``cfg`` before it starts.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf

from nanogpt.data import Corpus, CorpusConfig, find_corpus, prepare_corpus
from nanogpt.devices import check_trainer_fits_machine, chosen_experiment, local_rank, processes_per_job
from nanogpt.files import remove_stale_temps
from nanogpt.hf.gpt2 import check_gpt2_tokenizer, load_pretrained, pretrained_shape
from nanogpt.model import GPTConfig
from nanogpt.options import check_options
from nanogpt.runs.checkpoint import TrainedOn, check_resumable
from nanogpt.runs.folder import RunDir, keep_metrics_before_requeue, requeue_checkpoint, resolve_checkpoint
from nanogpt.sweeps.launch import processes_start_outside
from nanogpt.sweeps.study import job_trial, pruned_at
from nanogpt.training.callbacks.console import quiet_lightning
from nanogpt.training.callbacks.prune import PruneTrial
from nanogpt.training.compiler import CompiledStep, on_cuda, step_marker
from nanogpt.training.compiler import plan as plan_compile
from nanogpt.training.loggers import build_loggers
from nanogpt.training.module import GPTLightningModule
from nanogpt.training.record import RunRecord, sigterm_raises
from nanogpt.training.spec import RunFacts, derive, lightning_val_check_interval, model_fields
from nanogpt.training.validation import final_validation

log = logging.getLogger(__name__)


def instantiate(node: DictConfig, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, but a user error raised by the target reaches the user as is."""
    try:
        return hydra_instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, (ValueError, FileNotFoundError)):
            raise err.__cause__ from None
        raise


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train a GPT as ``cfg`` describes; return the final metrics, the best checkpoint and its loss
    on the whole val split (``final_val_loss``).

    Claim the run folder, derive the config the run trains with, record it, build, fit. The run's
    folder (:mod:`nanogpt.runs.folder`) gets ``config.yaml`` (the derived config) and ``result.json``.
    """
    quiet_lightning()
    run = run_dir_of(cfg)
    with RunRecord(run, cfg.get("name"), cfg.get("seed")) as record:
        with sigterm_raises():  # until fit, whose SIGTERM handling is Lightning's
            facts, corpus, pretrained = find_facts(cfg, run, record.requeued)
            cfg = derive(cfg, facts)
            record.save_config(cfg)
            trainer, module, datamodule = build(cfg, corpus, pretrained, record.requeued)
        record.watch(trainer)
        fit(cfg, trainer, module, datamodule, record.requeued)
        pruning = next((c for c in trainer.callbacks if isinstance(c, PruneTrial)), None)
        step = pruned_at(pruning.trial.study, pruning.trial.number) if pruning else None
        if step is not None:  # a trial its Optuna pruner stopped: no final validation
            return record.prune(trainer, step)
        # best.ckpt on the whole val split: the run's headline, result.json's final_val_loss
        return record.complete(trainer, final_validation(trainer, datamodule))


# how long the other ranks of a machine wait for local rank 0 to prepare the corpus (a large one
# takes a while; if rank 0 fails, torchrun and Lightning's launcher stop the others anyway)
CORPUS_WAIT_S = 3600.0


def find_facts(cfg: DictConfig, run: RunDir, requeued: bool) -> tuple[RunFacts, Corpus, dict | None]:
    """What the run needs to know besides its config: the facts :func:`derive` reads, the prepared
    corpus, and the pretrained weights (``model.init_from``, unless the run resumes).

    The options are checked before any data work, and a pretrained checkpoint is loaded before it
    too, so that a missing download fails at once. The corpus is prepared once per machine: local
    rank 0 prepares it, and the other ranks (torchrun's, or those Lightning's launcher starts) find
    the folder it published; the DataModule is handed it, so Lightning's own ``prepare_data`` and
    ``setup`` read nothing again.
    """
    check_options(cfg)
    init_from = cfg.model.get("init_from")
    shape = None
    if init_from:
        shape = pretrained_shape(str(init_from))
    GPTConfig(**model_fields(cfg.model, shape, vocab_size=1))  # the shape's options, before the data
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
    vocab_size = cfg.model.get("vocab_size") if shape is None else None
    if vocab_size is not None and vocab_size < corpus.vocab_size:
        raise ValueError(
            f"model.vocab_size={vocab_size} is smaller than the data's vocabulary ({corpus.vocab_size} "
            f"tokens in {corpus.folder}); leave model.vocab_size=null to take the data's, or set it to at "
            f"least {corpus.vocab_size} (a multiple of 64 is faster on a GPU)"
        )
    # whether to compile: compile=auto reads this machine's compile cache and looks for a compiler
    compiled = plan_compile(cfg, model_fields(cfg.model, shape, vocab_size=corpus.vocab_size))
    facts = RunFacts(
        vocab_size=corpus.vocab_size,
        compile=compiled,
        pretrained_shape=shape,
        sweep_job=HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN,
        launched_outside=processes_start_outside(),
        resume_from=resume,
        resumed=TrainedOn.read(resume) if resume else None,
    )
    return facts, corpus, pretrained


def build(
    cfg: DictConfig, corpus: Corpus, pretrained: dict | None, requeued: bool
) -> tuple[L.Trainer, GPTLightningModule, L.LightningDataModule]:
    """The trainer, the model and the data, from the derived config alone."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    precision = matmul_precision(cfg)
    if precision:
        torch.set_float32_matmul_precision(precision)
    model_config = GPTConfig(**model_fields(cfg.model))
    trained_on = TrainedOn(
        corpus_checksum=corpus.meta.checksum,
        corpus_source=corpus.meta.source,
        seed=cfg.data.seed,
        batch_size=cfg.data.batch_size,
    )
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path:
        check_resumable(
            Path(ckpt_path),
            model_config,
            trained_on,
            # a requeued job goes on in its own folder, to its own end
            max_steps=None if requeued else cfg.trainer.get("max_steps"),
            allow_new_corpus=bool(cfg.get("allow_new_corpus", False)),
        )
        # a save that kill -9 cut short left its temporary file beside the checkpoint
        for orphan in remove_stale_temps(Path(ckpt_path).parent):
            log.info("removed %s, a checkpoint write cut short by a killed process", orphan)
    if requeued:
        for kept in keep_metrics_before_requeue(RunDir.at(cfg.paths.output_dir)):
            log.info("requeued SLURM job: the metrics logged before the requeue are in %s", kept)
    loggers = build_loggers(cfg)
    datamodule = instantiate(cfg.data, corpus=corpus)
    module = GPTLightningModule(
        model_config,
        tokenizer=corpus.meta.tokenizer,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        compile=bool(cfg.get("compile")),  # true or false: derive() decided compile=auto
        trained_on=trained_on,
    )
    if pretrained is not None:
        module.model.load_state_dict(pretrained)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]
    if module.compile_training:  # times the compiling first step, and tells later runs it is cached
        marker = step_marker(cfg, model_fields(cfg.model))
        callbacks.append(CompiledStep(marker, warm=marker.is_file()))
    trial = job_trial()  # a job of an Optuna search reports val/loss to its trial, which may prune it
    if trial is not None:
        callbacks.append(PruneTrial(trial))
    trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers,
        val_check_interval=lightning_val_check_interval(cfg.trainer),
    )
    if trainer.world_size != processes_per_job(cfg.trainer):
        # the launch (torchrun, srun) and the trainer config must agree for the global batch to hold
        raise ValueError(
            f"this run has {trainer.world_size} processes, but trainer.devices x trainer.num_nodes is "
            f"{processes_per_job(cfg.trainer)}; set them to what the launcher starts (e.g. torchrun "
            "--nproc_per_node=8 --nnodes=2 needs trainer.devices=8 trainer.num_nodes=2)"
        )
    return trainer, module, datamodule


def fit(
    cfg: DictConfig,
    trainer: L.Trainer,
    module: GPTLightningModule,
    datamodule: L.LightningDataModule,
    requeued: bool,
) -> None:
    """Hand the loggers the derived config, then run Lightning's loop.

    The last step: ``fit`` closes the loggers itself, even when it fails, and a W&B run started
    here and left open would be reused by the next job of a sweep.
    """
    resolved = OmegaConf.to_container(cfg, resolve=True)
    with warnings.catch_warnings():
        # A resumed run writes into a new folder by design, so its best.ckpt is tracked afresh.
        warnings.filterwarnings("ignore", message="The dirpath has changed from")
        if requeued:  # the job's own folder: the CSV writer appends, the checkpoints are its own
            warnings.filterwarnings("ignore", message="(Experiment logs|Checkpoint) directory .* exists and")
        for logger in trainer.loggers:
            logger.log_hyperparams(resolved)
        # ckpt_path None in a requeued job: Lightning finds its own hpc_ckpt in the run folder
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))


def run_dir_of(cfg: DictConfig) -> RunDir:
    """The run's folder, keeping its checkpoints in ``paths.checkpoint_dir``.

    A callback given a checkpoint folder (``dirpath``) of its own would split the run's checkpoints
    over two folders, and ``ckpt_path=<run>`` could find only one: refused, naming the key to set.
    """
    run = RunDir.at(cfg.paths.output_dir, cfg.paths.get("checkpoint_dir"))
    for name, callback in (cfg.get("callbacks") or {}).items():
        dirpath = callback.get("dirpath") if callback else None
        if dirpath is not None and Path(dirpath) != run.checkpoint_dir:
            raise ValueError(
                f"callbacks.{name}.dirpath={dirpath} is not the run's checkpoint folder "
                f"paths.checkpoint_dir={run.checkpoint_dir}; every checkpoint of a run lives in one "
                f"folder: set paths.checkpoint_dir={dirpath} instead"
            )
    return run


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


def matmul_precision(cfg: DictConfig) -> str | None:
    """``cfg.matmul_precision``, with ``auto`` meaning TF32 ("high") on CUDA and torch's default elsewhere."""
    precision = cfg.get("matmul_precision")
    if precision != "auto":
        return precision
    return "high" if on_cuda(cfg.trainer) else None
