"""``nanogpt-train``: compose the Hydra config, build the pieces, and run Lightning's loop.

``train(cfg)`` is the whole job and is what tests and sweeps call; ``main`` is the console script.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate as hydra_instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from nanogpt import CONFIG_DIR
from nanogpt.callbacks import LossCurves
from nanogpt.data.datamodule import TextDataModule
from nanogpt.lightning_module import CHECKPOINT_FORMAT, GPTLightningModule
from nanogpt.loggers import build_loggers
from nanogpt.model import GPTConfig
from nanogpt.results import write_result
from nanogpt.sweep import check_single_process

# Lightning's _pytree module calls an API that torch deprecated; nothing a user can act on.
warnings.filterwarnings("ignore", category=FutureWarning, module="lightning.pytorch.utilities._pytree")


def resolve_resume_checkpoint(ckpt_path: str | os.PathLike, model_config: GPTConfig) -> Path:
    """Check that ``ckpt_path`` is a training checkpoint of this model before Lightning opens it."""
    path = Path(ckpt_path).expanduser()
    if path.is_dir() and (path / "checkpoints" / "last.ckpt").is_file():
        path = path / "checkpoints" / "last.ckpt"  # a run folder: resume where it stopped
    if not path.is_file():
        raise FileNotFoundError(
            f"ckpt_path={ckpt_path} does not exist; pass a checkpoint file, "
            "e.g. ckpt_path=runs/<experiment>/<time>/checkpoints/last.ckpt"
        )
    try:
        # mmap: only the small metadata is read, the tensors stay on disk
        ckpt = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as err:
        raise ValueError(
            f"ckpt_path={path} is not a readable checkpoint ({type(err).__name__}); pass a .ckpt file "
            "written by nanogpt-train, e.g. <run>/checkpoints/last.ckpt"
        ) from err
    hparams = ckpt.get("hyper_parameters", {}) if isinstance(ckpt, dict) else {}
    if "loops" not in ckpt or hparams.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"ckpt_path={path} is not a nanogpt training checkpoint (format {CHECKPOINT_FORMAT}); "
            "pass a .ckpt file written by nanogpt-train, e.g. <run>/checkpoints/last.ckpt"
        )
    saved = hparams["model"]
    wanted = dataclasses.asdict(model_config)
    diff = {k: (saved.get(k), v) for k, v in wanted.items() if saved.get(k) != v and k != "dropout"}
    if diff:
        fixes = " ".join(f"model.{k}={old}" for k, (old, _) in diff.items())
        raise ValueError(
            f"ckpt_path={path} holds a different model ({diff}, saved vs asked); resume with {fixes}"
        )
    return path


def _fresh_output_dir(output_dir: Path) -> None:
    ckpt_dir = output_dir / "checkpoints"
    if ckpt_dir.is_dir() and any(ckpt_dir.iterdir()):
        raise FileExistsError(
            f"{ckpt_dir} already holds checkpoints of another run, which this run would overwrite. "
            "Use a new output folder (the default run folder is new each second), or continue that "
            "run with ckpt_path=<its checkpoint>"
        )


def instantiate(node: DictConfig, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, but a user error raised by the target reaches the user as is."""
    try:
        return hydra_instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, (ValueError, FileNotFoundError)):
            raise err.__cause__ from None
        raise


def _instantiate_group(group: DictConfig | None) -> list[Any]:
    """Build every ``_target_`` entry of a callbacks/logger group; ``null`` entries switch one off."""
    if not group:
        return []
    return [instantiate(node) for node in group.values() if node is not None and "_target_" in node]


@rank_zero_only
def _save_config(cfg: DictConfig, output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)


def _in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _task_overrides() -> list[str]:
    """The command-line (or sweep) overrides of this job, as Hydra recorded them."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


@rank_zero_only
def _record(output_dir: Path, result: dict[str, Any], trainer: L.Trainer | None = None) -> None:
    """Write ``result.json``, with the loss history when the trainer's LossCurves callback has one."""
    if trainer is not None:
        result["step"] = trainer.global_step
        curves = next((c for c in trainer.callbacks if isinstance(c, LossCurves)), None)
        if curves is not None:
            result["history"] = curves.history
    write_result(output_dir, result)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train a GPT as ``cfg`` describes; return the final metrics and the best checkpoint.

    The run's folder gets ``result.json`` (status, metrics, wall time, loss history), written as
    the run starts and again when it completes or fails.
    """
    output_dir = Path(cfg.paths.output_dir)
    _fresh_output_dir(output_dir)
    started = time.time()
    result: dict[str, Any] = {
        "status": "running",
        "name": cfg.get("name"),
        "overrides": _task_overrides(),
        "seed": cfg.get("seed"),
        "started": datetime.fromtimestamp(started).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    _record(output_dir, result)
    trainer = None
    try:
        if cfg.get("seed") is not None:
            L.seed_everything(cfg.seed, workers=True, verbose=False)
        if cfg.get("matmul_precision"):
            torch.set_float32_matmul_precision(cfg.matmul_precision)

        fields = OmegaConf.to_container(cfg.model, resolve=True)
        vocab_size = fields.pop("vocab_size", None)
        # Validate the shape options before any data work; the vocabulary comes from the data later.
        model_config = GPTConfig(**fields, vocab_size=vocab_size or 1)
        ckpt_path = cfg.get("ckpt_path")
        # before any data work too: a W&B logger without credentials is refused here, at once
        loggers = build_loggers(cfg)

        datamodule: TextDataModule = instantiate(cfg.data)
        datamodule.prepare_data()
        model_config = dataclasses.replace(model_config, vocab_size=vocab_size or datamodule.vocab_size)
        if ckpt_path is not None:
            ckpt_path = resolve_resume_checkpoint(ckpt_path, model_config)

        module = GPTLightningModule(
            model_config,
            tokenizer=datamodule.meta["tokenizer"],
            optimizer=instantiate(cfg.optimizer),
            scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
            compile=cfg.get("compile", False),
        )
        trainer = instantiate(
            cfg.trainer,
            callbacks=_instantiate_group(cfg.get("callbacks")),
            logger=loggers,
        )
        if _in_multirun():
            check_single_process(trainer.world_size, cfg.trainer.get("strategy"))
        _save_config(cfg, output_dir)
        resolved = OmegaConf.to_container(cfg, resolve=True)
        for logger in trainer.loggers:
            logger.log_hyperparams(resolved)

        with warnings.catch_warnings():
            # A resumed run writes into a new folder by design, so its best.ckpt is tracked afresh.
            warnings.filterwarnings("ignore", message="The dirpath has changed from")
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)

        metrics: dict[str, Any] = {k: v.item() for k, v in trainer.callback_metrics.items()}
        metrics["step"] = trainer.global_step
        checkpoint = trainer.checkpoint_callback
        if isinstance(checkpoint, ModelCheckpoint) and checkpoint.best_model_score is not None:
            metrics["best_val_loss"] = checkpoint.best_model_score.item()
            metrics["best_ckpt"] = checkpoint.best_model_path
    except BaseException as err:
        # KeyboardInterrupt too: the report should say the job stopped, not that it still runs
        result.update(
            status="failed", error=f"{type(err).__name__}: {err}", wall_time_s=time.time() - started
        )
        _record(output_dir, result, trainer)
        if trainer is not None:
            # fit() closes the loggers itself, but not when it never started; a W&B run left open
            # would be reused by the next job of a sweep (closing twice is harmless)
            for logger in trainer.loggers:
                logger.finalize("failed")
        raise
    result.update(
        status="completed",
        wall_time_s=time.time() - started,
        best_val_loss=metrics.get("best_val_loss"),
        best_ckpt=metrics.get("best_ckpt"),
        metrics={k: v for k, v in metrics.items() if isinstance(v, float)},
    )
    _record(output_dir, result, trainer)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    # A sweeper (e.g. Optuna) minimises what the app returns.
    name = cfg.get("optimized_metric")
    return metrics.get(name) if name else None


if __name__ == "__main__":
    main()
