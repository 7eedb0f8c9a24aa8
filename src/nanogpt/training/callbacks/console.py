"""What a training run shows on the console: its progress in optimizer steps (a bar on a terminal,
plain lines in a file or a pipe), a summary of the run before it starts, and none of Lightning's
banners."""

from __future__ import annotations

import logging
import sys
import time
import warnings
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ProgressBar, TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_only

from nanogpt.training.callbacks.loop import is_logging_step
from nanogpt.training.callbacks.throughput import ThroughputLogger

log = logging.getLogger(__name__)

# What Lightning prints at every start that says nothing about this run: which accelerators exist
# (the run summary names the one used), and advertisements for its cloud services.
BANNERS = ("GPU available:", "TPU available:", "HPU available:", "💡 Tip:")


def _not_a_banner(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(BANNERS)


def quiet_lightning() -> None:
    """Drop Lightning's start-up banners from the console; its warnings and other messages stay.

    Lightning sends its ``rank_zero_info`` messages through one logger, filtered here by message,
    and logs the CUDA devices each rank sees from ``lightning.pytorch.accelerators.cuda``. Lightning's
    ``_pytree`` module calls an API that torch deprecated, which no user can act on: not shown.
    """
    warnings.filterwarnings("ignore", category=FutureWarning, module="lightning.pytorch.utilities._pytree")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if _not_a_banner not in logger.filters:
            logger.addFilter(_not_a_banner)
    logging.getLogger("lightning.pytorch.accelerators.cuda").setLevel(logging.WARNING)


def progress_bar(style: str = "auto", refresh_rate: int = 10) -> ProgressBar:
    """The run's progress display: :class:`StepProgressBar` on a terminal (or in Jupyter, which
    redraws a line too), :class:`StepLines` when stdout is a file or a pipe (a SLURM log, ``| tee``),
    where a bar's redraws are escape codes.

    Args:
        style: ``auto`` (by ``sys.stdout.isatty()``), ``bar`` or ``lines``.
        refresh_rate: the bar's redraw interval in optimizer steps.
    """
    if style == "auto":
        jupyter = type(sys.stdout).__module__.startswith("ipykernel")  # its OutStream is no TTY
        style = "bar" if sys.stdout.isatty() or jupyter else "lines"
    if style == "bar":
        return StepProgressBar(refresh_rate=refresh_rate)
    if style == "lines":
        return StepLines()
    raise ValueError(f"callbacks.progress_bar.style={style!r} is not a style; use auto, bar or lines")


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
        self._timed = False

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
        self._timed = False

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._timed:  # the rate counts from the end of the first step, which compiles or warms up
            self._timed, self._tokens, self._t0 = True, 0, time.perf_counter()
        else:
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


class StepLines(ProgressBar):
    """Progress as plain lines on stdout: one at each step whose metrics reach the loggers (every
    ``trainer.log_every_n_steps`` steps, and the last), and one after each validation::

        step 200/2000  train/loss 2.0100  lr 1.0e-03  12.3k tok/s  eta 1m20s
        step 250/2000  val/loss 1.9800  val/ppl 7.2427

    The numbers are the ones the loggers receive, so the lines agree with ``metrics.csv``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._tokens = 0
        self._t0 = 0.0
        self._start_step = 0
        self._shown = -1  # the step the last train line showed
        self._timed = False

    def disable(self) -> None:
        self._enabled = False  # Lightning disables the bar on every rank but the first

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a resumed run starts part-way: its rate and ETA count from there
        self._tokens, self._t0 = 0, time.perf_counter()
        self._start_step = self._shown = trainer.global_step
        self._timed = False

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if not self._timed:  # rate and ETA count from the end of the first step, which compiles or warms up
            self._timed, self._tokens, self._t0, self._start_step = True, 0, time.perf_counter(), step
        else:
            self._tokens += batch[0].numel() * trainer.world_size
        # once per optimizer step (not per micro-batch of a gradient accumulation)
        if not self._enabled or step == self._shown or not is_logging_step(trainer, step):
            return
        self._shown = step
        metrics = trainer.callback_metrics
        parts = [self._step(trainer)]
        if "train/loss" in metrics:
            parts.append(f"train/loss {metrics['train/loss'].item():.4f}")
        if "lr" in metrics:
            parts.append(f"lr {metrics['lr'].item():.1e}")
        elapsed = time.perf_counter() - self._t0
        if elapsed > 0:
            parts.append(f"{_count(self._tokens / elapsed)} tok/s")
            if trainer.max_steps > 0 and step > self._start_step:
                left = (trainer.max_steps - step) * elapsed / (step - self._start_step)
                parts.append(f"eta {_duration(left)}")
        print("  ".join(parts), flush=True)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._enabled or trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        parts = [f"{key} {value.item():.4f}" for key, value in metrics.items() if key.startswith("val/")]
        print("  ".join([self._step(trainer), *parts]), flush=True)

    @staticmethod
    def _step(trainer: L.Trainer) -> str:
        total = f"/{trainer.max_steps}" if trainer.max_steps > 0 else ""
        return f"step {trainer.global_step}{total}"


def _count(n: float) -> str:
    """12345.6 -> "12.3k": a rate as a reader takes it in at a glance."""
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def _duration(seconds: float) -> str:
    """80 -> "1m20s", 7380 -> "2h03m"."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


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
