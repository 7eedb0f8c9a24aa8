"""The LightningModule: wires the plain-PyTorch GPT to its loss, metrics, optimizer and schedule."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from torch.distributed.fsdp import FullyShardedDataParallel
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics.text import Perplexity

from nanogpt.metrics.bpc import bpc_per_nat
from nanogpt.model import GPT, GPTConfig, ParamGroups
from nanogpt.runs.checkpoint import CHECKPOINT_FORMAT, TrainedOn
from nanogpt.training.callbacks.loop import is_logging_step

log = logging.getLogger(__name__)


class GPTLightningModule(L.LightningModule):
    """Train and evaluate a :class:`~nanogpt.model.GPT`.

    Args:
        model: the model's :class:`GPTConfig` (or its fields as a dict).
        tokenizer: the tokenizer's ``meta()``, kept in the checkpoint so it can be decoded alone.
        optimizer: builds the optimizer from the model's :class:`~nanogpt.model.ParamGroups`: a
            factory of :mod:`nanogpt.optimizers` as a Hydra ``_partial_``, with its hyperparameters.
        scheduler: builds a per-step LR scheduler from the optimizer, or ``None`` for a constant LR.
        compile: train with ``torch.compile`` of the model's forward; validation and generation run
            the plain model (see :mod:`nanogpt.training.compiler`).
        trained_on: the corpus and the training stream, recorded in every checkpoint so that a
            resume can refuse another corpus and name a changed seed or batch size.
    """

    def __init__(
        self,
        model: GPTConfig | dict,
        tokenizer: dict | None = None,
        optimizer: Callable[[ParamGroups], torch.optim.Optimizer] | None = None,
        scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
        compile: bool = False,
        trained_on: TrainedOn | None = None,
    ) -> None:
        super().__init__()
        config = model if isinstance(model, GPTConfig) else GPTConfig(**model)
        # Only plain data goes into hparams, so checkpoints load with weights_only=True.
        self.save_hyperparameters(
            {"model": dataclasses.asdict(config), "tokenizer": tokenizer, "format": CHECKPOINT_FORMAT}
        )
        self.model = GPT(config)
        self.compile_training = compile
        # the compiled forward of training steps: a function, not a submodule, so the weights and the
        # checkpoint keys stay those of the plain model; made in configure_model, in the process that
        # trains (a spawned rank), so the module itself stays picklable
        self.training_forward: Callable | None = None
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.trained_on = trained_on
        self.val_ppl = Perplexity()
        self.bpc_scale: float | None = None  # val/bpc per val/loss, from the data in setup()

    def configure_model(self) -> None:
        if self.compile_training and self.training_forward is None:
            self.training_forward = torch.compile(self.model.forward)

    def setup(self, stage: str) -> None:
        # val/bpc does not depend on the tokenizer, so char and BPE runs share one chart
        corpus = getattr(self.trainer.datamodule, "corpus", None)
        if corpus is not None:
            self.bpc_scale = bpc_per_nat(corpus.meta)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.trained_on is not None:
            checkpoint[TrainedOn.KEY] = dataclasses.asdict(self.trained_on)

    def on_train_start(self) -> None:
        # A resumed run follows the schedule of the new command, which may not be the saved one's
        # (the cosine decays to trainer.max_steps): say so before it trains at another rate.
        if self.trainer.ckpt_path is None:
            return
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if not isinstance(scheduler, LambdaLR):
                continue
            saved = scheduler.get_last_lr()[0]  # restored from the checkpoint
            step = scheduler.last_epoch
            now = scheduler.base_lrs[0] * scheduler.lr_lambdas[0](step)
            if abs(now - saved) > 1e-6 * max(abs(saved), 1e-12):
                log.warning(
                    "resuming at step %d on another learning-rate schedule than the saved run's: the lr "
                    "there is %.3g, where the run had %.3g. The schedule is the new command's (its "
                    "cosine ends at scheduler.decay_steps, which follows trainer.max_steps); resume with "
                    "the run's own trainer.max_steps and scheduler settings to continue its curve",
                    step,
                    now,
                    saved,
                )

    def _shared_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], stage: str, log: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch  # (B, T), (B, T)
        forward = self.training_forward if stage == "train" and self.training_forward else self.model
        logits, loss = forward(x, y)
        if log:
            # val/loss is averaged over the whole evaluation (weighted by batch) and across ranks
            self.log(
                f"{stage}/loss", loss, prog_bar=stage == "val", batch_size=x.size(0), sync_dist=stage == "val"
            )
        return logits, loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        # Logging between the loggers' steps costs Lightning's bookkeeping for values no logger
        # receives: 2.0 ms of CPU a step in the CPU recipe, 0.45 ms when only those steps log
        # (about 3% of its 50 ms step)
        log = is_logging_step(self.trainer, self.global_step + 1)
        _, loss = self._shared_step(batch, "train", log=log)
        if log:
            self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=1)
            # One step convention in every file and logger: optimizer steps done once this update is
            # made, as the progress bar counts. Lightning takes a logged "step" as the loggers' x-axis.
            self.log("step", float(self.global_step + 1), batch_size=1)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.log("step", float(self.global_step), batch_size=1, sync_dist=True)  # steps done so far
        logits, loss = self._shared_step(batch, "val")
        self.val_ppl(logits.float(), batch[1])
        self.log("val/ppl", self.val_ppl, batch_size=batch[0].size(0))
        if self.bpc_scale is not None:
            self.log("val/bpc", loss * self.bpc_scale, batch_size=batch[0].size(0), sync_dist=True)

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        # Under FSDP (trainer=fsdp) each rank holds a shard of every gradient: only the root FSDP
        # module knows the norm of the whole, and Lightning's own norm clipping refuses FSDP.
        by_norm = gradient_clip_algorithm in (None, "norm")  # None: Lightning's default, the norm
        if gradient_clip_val and by_norm and isinstance(self.trainer.model, FullyShardedDataParallel):
            self.trainer.model.clip_grad_norm_(gradient_clip_val)
            return
        # bf16-mixed scales no loss, yet Lightning's mixed-precision plugin refuses to clip for any
        # optimizer that unscales in its step (AdamW's fused kernel, which nanogpt.optimizers.adamw
        # uses): with no scaler there is nothing to unscale, so clip as Lightning's fp32 path does
        plugin = self.trainer.precision_plugin
        if gradient_clip_val and isinstance(plugin, MixedPrecision) and plugin.scaler is None:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            if by_norm:
                torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise ValueError("no optimizer configured; pass optimizer=adamw (or another optimizer group)")
        optimizer = self.optimizer_factory(self.model.param_groups())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
