"""What a training run shows on the console: a progress bar in optimizer steps, and a summary
of the run before it starts."""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_only

from nanogpt.metrics.throughput import ThroughputLogger

log = logging.getLogger(__name__)


class StepProgressBar(TQDMProgressBar):
    """Progress counted in optimizer steps out of ``trainer.max_steps``, with loss and tokens/s.

    Lightning's own bar counts batches of an epoch, which an endless stream of windows does not
    have. The loss is read from the device only when the bar refreshes, not at every step.
    """

    def __init__(self, refresh_rate: int = 10, process_position: int = 0) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position)
        self._extra: dict[str, Any] = {}
        self._tokens = 0
        self._t0 = 0.0
        self._shown = -1  # the step the bar last showed

    @property
    def train_description(self) -> str:
        return "train"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._reset(trainer)

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        # Lightning's bar resets itself to the epoch's batches here; a resumed run, which continues
        # its epoch, skips this hook, hence the reset in on_train_start too
        self._reset(trainer)

    def _reset(self, trainer: L.Trainer) -> None:
        bar = self.train_progress_bar
        bar.reset(total=trainer.max_steps if trainer.max_steps > 0 else None)
        bar.n = bar.initial = trainer.global_step  # a resumed run starts part-way: rates count from here
        self._tokens, self._t0 = 0, time.perf_counter()
        self._shown = trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._tokens += batch[0].numel() * trainer.world_size
        step = trainer.global_step
        bar = self.train_progress_bar
        # refresh every refresh_rate steps, and at the last one, once per optimizer step (not per
        # micro-batch of a gradient accumulation)
        if bar is None or not self.is_enabled:
            return
        if step == self._shown or (step % self.refresh_rate and step != bar.total):
            return
        self._shown = step
        elapsed = time.perf_counter() - self._t0
        # Lightning hands over the loss divided by accumulate_grad_batches (what backward sees)
        loss = outputs["loss"].item() * trainer.accumulate_grad_batches
        self._extra = {"loss": f"{loss:.4f}", "tok/s": f"{self._tokens / elapsed:,.0f}"}
        bar.n = step
        bar.set_postfix(self.get_metrics(trainer, pl_module))

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return {**self._extra, **metrics}


class RunSummary(Callback):
    """Print what is about to run: size, tokens per step, device, precision and output folder."""

    def __init__(self, output_dir: str) -> None:
        self.output_dir = output_dir
        self.params = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # counted before the strategy wraps the model: under FSDP a rank then holds only its shard
        self.params = pl_module.model.num_params()

    @rank_zero_only
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        tokens = dm.batch_size * dm.block_size * trainer.accumulate_grad_batches * trainer.world_size
        derived = " (from data.global_batch_tokens)" if getattr(dm, "global_batch_tokens", None) else ""
        lines = [
            "nanogpt run",
            f"  parameters      {self.params / 1e6:.2f}M (without position embeddings)",
            f"  tokens/step     {tokens:,} = batch {dm.batch_size} x context {dm.block_size}"
            f" x accumulation {trainer.accumulate_grad_batches}{derived} x devices {trainer.world_size}",
        ]
        perf = next((c for c in trainer.callbacks if isinstance(c, ThroughputLogger)), None)
        if perf is not None and perf.flops_per_token:
            lines.append(
                f"  FLOPs/token     {perf.flops_per_token / 1e6:,.1f}M (forward + backward, full context)"
            )
            peak = (
                f"{perf.available_flops / 1e12:,.1f} TFLOP/s per device, for perf/mfu"
                if perf.available_flops
                else "unknown: no perf/mfu (set callbacks.throughput.peak_flops)"
            )
            lines.append(f"  peak            {peak}")
        lines += [
            f"  device          {trainer.strategy.root_device} x {trainer.world_size}"
            f" ({type(trainer.strategy).__name__})",
            f"  precision       {trainer.precision}",
            f"  max steps       {trainer.max_steps}",
            f"  output folder   {self.output_dir}",
        ]
        log.info("\n".join(lines))
