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
from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf

from nanogpt.files import remove_stale_temps
from nanogpt.runs.checkpoint import check_resumable
from nanogpt.runs.folder import RunDir, keep_metrics_before_requeue
from nanogpt.sweeps.study import job_trial, pruned_at
from nanogpt.training.callbacks.console import quiet_lightning
from nanogpt.training.callbacks.prune import PruneTrial
from nanogpt.training.compiler import CompiledStep
from nanogpt.training.loggers import build_loggers
from nanogpt.training.module import GPTLightningModule
from nanogpt.training.record import RunRecord, sigterm_raises
from nanogpt.training.spec import RunSpec, derive_spec, prepare_run
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

    Claim the run folder, prepare the run and derive its spec (:mod:`nanogpt.training.spec`),
    record it, build, fit. The run's folder (:mod:`nanogpt.runs.folder`) gets ``config.yaml`` (the
    derived config) and ``result.json``.
    """
    quiet_lightning()
    run = run_dir_of(cfg)
    with RunRecord(run, cfg.get("name"), cfg.get("seed")) as record:
        with sigterm_raises():  # until fit, whose SIGTERM handling is Lightning's
            spec = derive_spec(cfg, prepare_run(cfg, run, record.requeued))
            record.save_config(spec)
            trainer, module, datamodule = build(spec)
        record.watch(trainer)
        fit(spec, trainer, module, datamodule)
        pruning = next((c for c in trainer.callbacks if isinstance(c, PruneTrial)), None)
        step = pruned_at(pruning.trial.study, pruning.trial.number) if pruning else None
        if step is not None:  # a trial its Optuna pruner stopped: no final validation
            return record.prune(trainer, step)
        # best.ckpt on the whole val split: the run's headline, result.json's final_val_loss
        return record.complete(trainer, final_validation(trainer, datamodule))


def build(spec: RunSpec) -> tuple[L.Trainer, GPTLightningModule, L.LightningDataModule]:
    """The trainer, the model and the data, from the run's spec alone."""
    cfg = spec.cfg
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    if spec.matmul_precision:
        torch.set_float32_matmul_precision(spec.matmul_precision)
    if spec.ckpt_path is not None:
        check_resumable(
            spec.ckpt_path,
            spec.model,
            spec.trained_on,
            # a requeued job goes on in its own folder, to its own end
            max_steps=None if spec.requeued else cfg.trainer.get("max_steps"),
            allow_new_corpus=bool(cfg.get("allow_new_corpus", False)),
        )
        # a save that kill -9 cut short left its temporary file beside the checkpoint
        for orphan in remove_stale_temps(spec.ckpt_path.parent):
            log.info("removed %s, a checkpoint write cut short by a killed process", orphan)
    if spec.requeued:
        for kept in keep_metrics_before_requeue(RunDir.at(cfg.paths.output_dir)):
            log.info("requeued SLURM job: the metrics logged before the requeue are in %s", kept)
    loggers = build_loggers(cfg)
    datamodule = instantiate(cfg.data, corpus=spec.corpus)
    module = GPTLightningModule(
        spec.model,
        tokenizer=spec.corpus.meta.tokenizer,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        compile=spec.compile,
        trained_on=spec.trained_on,
    )
    if spec.pretrained is not None:
        module.model.load_state_dict(spec.pretrained)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]
    if spec.compile_marker is not None:  # times the compiling first step, and tells later runs it is cached
        callbacks.append(CompiledStep(spec.compile_marker, warm=spec.compile_marker.is_file()))
    trial = job_trial()  # a job of an Optuna search reports val/loss to its trial, which may prune it
    if trial is not None:
        callbacks.append(PruneTrial(trial))
    trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers, val_check_interval=spec.val_check_interval
    )
    if trainer.world_size != spec.processes:
        # the launch (torchrun, srun) and the trainer config must agree for the global batch to hold
        raise ValueError(
            f"this run has {trainer.world_size} processes, but trainer.devices x trainer.num_nodes is "
            f"{spec.processes}; set them to what the launcher starts (e.g. torchrun "
            "--nproc_per_node=8 --nnodes=2 needs trainer.devices=8 trainer.num_nodes=2)"
        )
    return trainer, module, datamodule


def fit(
    spec: RunSpec, trainer: L.Trainer, module: GPTLightningModule, datamodule: L.LightningDataModule
) -> None:
    """Hand the loggers the derived config, then run Lightning's loop.

    The last step: ``fit`` closes the loggers itself, even when it fails, and a W&B run started
    here and left open would be reused by the next job of a sweep.
    """
    resolved = OmegaConf.to_container(spec.cfg, resolve=True)
    with warnings.catch_warnings():
        # A resumed run writes into a new folder by design, so its best.ckpt is tracked afresh.
        warnings.filterwarnings("ignore", message="The dirpath has changed from")
        if spec.requeued:  # the job's own folder: the CSV writer appends, the checkpoints are its own
            warnings.filterwarnings("ignore", message="(Experiment logs|Checkpoint) directory .* exists and")
        for logger in trainer.loggers:
            logger.log_hyperparams(resolved)
        # ckpt_path None in a requeued job: Lightning finds its own hpc_ckpt in the run folder
        ckpt_path = None if spec.ckpt_path is None else str(spec.ckpt_path)
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)


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
