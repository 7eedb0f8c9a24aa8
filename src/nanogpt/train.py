"""``nanogpt-train``: compose the Hydra config, build the pieces, run Lightning's loop, return.

``train(cfg)`` is the whole job and is what tests and sweeps call; ``main`` is the console script.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import warnings
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf

from nanogpt import CONFIG_DIR
from nanogpt.checkpoint import latest_run, refuse_existing_checkpoints, resume_checkpoint
from nanogpt.devices import check_trainer_fits_machine, processes_per_job
from nanogpt.errors import user_errors_in_one_line
from nanogpt.files import remove_stale_temps
from nanogpt.hf_gpt2 import init_from_pretrained
from nanogpt.lightning_module import GPTLightningModule
from nanogpt.loggers import build_loggers
from nanogpt.loop import accumulation_for, lightning_val_check_interval
from nanogpt.model import GPTConfig
from nanogpt.runs.names import keep_metrics_before_requeue, requeue_checkpoint, requeued_into
from nanogpt.runs.record import RunRecord, interrupted_by
from nanogpt.runs.sweep import processes_start_outside, sweep_strategy

log = logging.getLogger(__name__)

# Lightning's _pytree module calls an API that torch deprecated; nothing a user can act on.
warnings.filterwarnings("ignore", category=FutureWarning, module="lightning.pytorch.utilities._pytree")


def instantiate(node: DictConfig, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, but a user error raised by the target reaches the user as is."""
    try:
        return hydra_instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, (ValueError, FileNotFoundError)):
            raise err.__cause__ from None
        raise


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train a GPT as ``cfg`` describes; return the final metrics and the best checkpoint.

    The run's folder gets ``config.yaml`` and ``result.json`` (:class:`~nanogpt.runs.record.RunRecord`).
    """
    # before the record below rewrites its result.json: a requeued SLURM job resumes its own folder
    requeued = requeued_into(cfg.paths.output_dir)
    refuse_existing_checkpoints(cfg.paths.output_dir)
    with RunRecord(cfg) as record:
        if cfg.get("seed") is not None:
            L.seed_everything(cfg.seed, workers=True, verbose=False)
        precision = matmul_precision(cfg)
        if precision:
            torch.set_float32_matmul_precision(precision)

        # model.init_from: the shape is the pretrained checkpoint's, and so are the weights unless resuming
        pretrained = init_from_pretrained(cfg) if cfg.model.get("init_from") else None
        fields = OmegaConf.to_container(cfg.model, resolve=True)
        fields.pop("init_from", None)  # where the weights start from, not part of the architecture
        vocab_size = fields.pop("vocab_size", None)
        # Validate the shape options before any data work; the vocabulary comes from the data later.
        model_config = GPTConfig(**fields, vocab_size=vocab_size or 1)
        # before any data work too: a GPU recipe without a GPU, a W&B logger without credentials
        check_trainer_fits_machine(cfg.trainer, cfg.get("name"))
        if requeued:
            for kept in keep_metrics_before_requeue(cfg.paths.output_dir):
                log.info("requeued SLURM job: the metrics logged before the requeue are in %s", kept)
        loggers = build_loggers(cfg)

        datamodule = instantiate(cfg.data)
        datamodule.prepare_data()  # once: the call in fit() is a no-op, the module keeps its corpus
        model_config = dataclasses.replace(model_config, vocab_size=vocab_size or datamodule.vocab_size)
        ckpt_path = cfg.get("ckpt_path")
        if ckpt_path is None and requeued:
            ckpt_path = requeue_checkpoint(cfg.paths.output_dir)
            log.info(
                "requeued SLURM job: resuming in %s from %s", cfg.paths.output_dir, ckpt_path or "hpc_ckpt"
            )
        if ckpt_path == "last":  # the newest earlier run of this experiment
            ckpt_path = latest_run(cfg.paths.log_dir, cfg.name, exclude=cfg.paths.output_dir)
        if ckpt_path:
            ckpt_path = resume_checkpoint(ckpt_path, model_config)
            # a save that kill -9 cut short left its temporary file beside the checkpoint
            for orphan in remove_stale_temps(ckpt_path.parent):
                log.info("removed %s, a checkpoint write cut short by a killed process", orphan)

        module = GPTLightningModule(
            model_config,
            tokenizer=datamodule.corpus.meta.tokenizer,
            optimizer=instantiate(cfg.optimizer),
            scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
            compile=cfg.get("compile", False),
        )
        if pretrained is not None:
            module.model.load_state_dict(pretrained)
            del pretrained  # the checkpoint's copy; the model now holds the weights
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            strategy = sweep_strategy(cfg.trainer, launched_outside=processes_start_outside())
            if strategy is not None:
                log.info(
                    "trainer.strategy=%s under nanogpt-train -m: Lightning's ddp launcher would re-run the "
                    "whole sweep in every rank, so this job starts its ranks with trainer.strategy=%s",
                    cfg.trainer.get("strategy") or "auto",
                    strategy,
                )
                cfg.trainer.strategy = strategy
        derive_accumulation(cfg)
        callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]
        trainer = instantiate(
            cfg.trainer,
            callbacks=callbacks,
            logger=loggers,
            val_check_interval=lightning_val_check_interval(cfg.trainer),
        )
        record.watch(trainer)
        if trainer.world_size != processes_per_job(cfg.trainer):
            # the launch (torchrun, srun) and the trainer config must agree for the global batch to hold
            raise ValueError(
                f"this run has {trainer.world_size} processes, but trainer.devices x trainer.num_nodes is "
                f"{processes_per_job(cfg.trainer)}; set them to what the launcher starts (e.g. torchrun "
                "--nproc_per_node=8 --nnodes=2 needs trainer.devices=8 trainer.num_nodes=2)"
            )

        # The last step before fit(), which closes the loggers itself, even when it fails: a W&B
        # run started here and left open would be reused by the next job of a sweep.
        resolved = OmegaConf.to_container(cfg, resolve=True)
        with warnings.catch_warnings():
            # A resumed run writes into a new folder by design, so its best.ckpt is tracked afresh.
            warnings.filterwarnings("ignore", message="The dirpath has changed from")
            if requeued:  # the job's own folder: the CSV writer appends, the checkpoints are its own
                warnings.filterwarnings(
                    "ignore", message="(Experiment logs|Checkpoint) directory .* exists and"
                )
            for logger in trainer.loggers:
                logger.log_hyperparams(resolved)
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        return record.complete(trainer)


def matmul_precision(cfg: DictConfig) -> str | None:
    """``cfg.matmul_precision``, with ``auto`` meaning TF32 ("high") on CUDA and torch's default elsewhere."""
    precision = cfg.get("matmul_precision")
    if precision != "auto":
        return precision
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    on_cuda = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
    return "high" if on_cuda else None


def derive_accumulation(cfg: DictConfig) -> None:
    """Set ``trainer.accumulate_grad_batches`` from ``data.global_batch_tokens``, when it is given."""
    tokens = cfg.data.get("global_batch_tokens")
    if tokens is None:
        return
    if (cfg.trainer.get("accumulate_grad_batches") or 1) != 1:
        raise ValueError(
            f"data.global_batch_tokens={tokens} sets trainer.accumulate_grad_batches, which is also set "
            f"(to {cfg.trainer.accumulate_grad_batches}); set one of them"
        )
    processes = processes_per_job(cfg.trainer)
    accumulation = accumulation_for(tokens, cfg.data.batch_size, cfg.data.block_size, processes)
    cfg.trainer.accumulate_grad_batches = accumulation
    log.info(
        "data.global_batch_tokens=%s: accumulation %d = %s / (batch %d x context %d x %d processes)",
        f"{tokens:,}",
        accumulation,
        f"{tokens:,}",
        cfg.data.batch_size,
        cfg.data.block_size,
        processes,
    )


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        with user_errors_in_one_line(log_file=f"{cfg.paths.output_dir}/train.log"):
            metrics = train(cfg)
    except SystemExit as exit:
        # An interrupted run exits as the shell expects (130 for Ctrl-C, 143 for SIGTERM); Lightning's
        # SIGTERMException is a SystemExit without a code, which would exit 0
        signum = interrupted_by(exit)
        if signum is not None:
            sys.exit(128 + signum)
        raise
    # A sweeper (e.g. Optuna) minimises what the app returns.
    name = cfg.get("optimized_metric")
    return metrics.get(name) if name else None


# Groups a run can do without. Hydra deletes a group with ~group and refuses group=null.
OPTIONAL_GROUPS = ("logger", "callbacks", "scheduler", "experiment", "hparams_search", "debug")


def cli() -> None:
    """The ``nanogpt-train`` console script: :func:`main`, with ``logger=null`` meaning ``~logger``."""
    nulls = {f"{group}=null": f"~{group}" for group in OPTIONAL_GROUPS}
    sys.argv = [sys.argv[0], *(nulls.get(arg, arg) for arg in sys.argv[1:])]
    main()


if __name__ == "__main__":
    cli()
