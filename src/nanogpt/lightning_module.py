"""The LightningModule: wires the plain-PyTorch GPT to its loss, metrics, optimizer and schedule."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torchmetrics.text import Perplexity

from nanogpt.model import GPT, GPTConfig

CHECKPOINT_FORMAT = 1  # bump when the checkpoint layout changes incompatibly


class GPTLightningModule(L.LightningModule):
    """Train and evaluate a :class:`~nanogpt.model.GPT`.

    Args:
        model: the model's :class:`GPTConfig` (or its fields as a dict).
        tokenizer: the tokenizer's ``meta()``, kept in the checkpoint so it can be decoded alone.
        optimizer: builds the optimizer from parameter groups (a Hydra ``_partial_``); its
            ``weight_decay`` is applied to matrices and embeddings only.
        scheduler: builds a per-step LR scheduler from the optimizer, or ``None`` for a constant LR.
        compile: wrap the model in ``torch.compile``.
    """

    def __init__(
        self,
        model: GPTConfig | dict,
        tokenizer: dict | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        config = model if isinstance(model, GPTConfig) else GPTConfig(**model)
        # Only plain data goes into hparams, so checkpoints load with weights_only=True.
        self.save_hyperparameters(
            {"model": dataclasses.asdict(config), "tokenizer": tokenizer, "format": CHECKPOINT_FORMAT}
        )
        self.model = GPT(config)
        if compile:
            self.model.compile()  # in place, so checkpoint keys stay those of the plain model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.val_ppl = Perplexity()
        self.bpc_scale: float | None = None  # val/bpc per val/loss, from the data in setup()

    def setup(self, stage: str) -> None:
        # bits per character = loss (nats per token) x tokens per character / ln 2: it does not
        # depend on the tokenizer, so char and BPE runs share one val/bpc chart.
        meta = getattr(self.trainer.datamodule, "meta", None)
        if isinstance(meta, dict) and meta.get("val_chars"):
            self.bpc_scale = meta["val_tokens"] / meta["val_chars"] / math.log(2)

    def _shared_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], stage: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch  # (B, T), (B, T)
        logits, loss = self.model(x, y)
        # val/loss is averaged over the whole evaluation (weighted by batch) and across ranks
        self.log(
            f"{stage}/loss", loss, prog_bar=stage == "val", batch_size=x.size(0), sync_dist=stage == "val"
        )
        return logits, loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        _, loss = self._shared_step(batch, "train")
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=1)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        logits, loss = self._shared_step(batch, "val")
        self.val_ppl(logits.float(), batch[1])
        self.log("val/ppl", self.val_ppl, batch_size=batch[0].size(0))
        if self.bpc_scale is not None:
            self.log("val/bpc", loss * self.bpc_scale, batch_size=batch[0].size(0), sync_dist=True)

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise ValueError("no optimizer configured; pass optimizer=adamw (or another optimizer group)")
        keywords = getattr(self.optimizer_factory, "keywords", {})
        extra = {}
        if self.device.type == "cuda" and getattr(self.optimizer_factory, "func", None) is torch.optim.AdamW:
            extra["fused"] = True
        optimizer = self.optimizer_factory(
            self.model.param_groups(keywords.get("weight_decay", 0.0)), **extra
        )
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
