"""``perf/tokens_per_s``, ``perf/step_ms``, ``perf/mfu`` and ``perf/train_s``: how fast a run
trains, to every logger.

Built from the pieces of Lightning's ``ThroughputMonitor``: ``measure_flops`` counts the FLOPs of one
forward and backward pass (on the meta device, so it costs no memory and no compute), ``Throughput``
turns timings over a sliding window into rates, and ``get_available_flops`` is Lightning's table of
the peak FLOP/s of known GPUs. The monitor itself is not used because it logs under its own names
(``train|device/items_per_sec``...) and counts micro-batches, where a run here counts optimizer steps.

MFU (model FLOPs utilisation) is the FLOPs the model needs per second, per device, over the device's
peak for the run's precision: bf16 for ``bf16-mixed``, TF32 for float32 when
``matmul_precision`` allows it. GPUs missing from Lightning's table, and CPUs, have no peak unless
``callbacks.throughput.peak_flops`` gives one (per device), and then log no ``perf/mfu``.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.throughput import Throughput, get_available_flops
from lightning.pytorch.callbacks import Callback

from nanogpt.metrics.flops import flops_per_token
from nanogpt.training.callbacks.loop import is_logging_step


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype a Lightning precision setting does its matmuls in."""
    if precision.startswith("bf16"):
        return torch.bfloat16
    if precision.startswith("16"):
        return torch.float16
    return torch.float32


class ThroughputLogger(Callback):
    """Log ``perf/*`` every ``trainer.log_every_n_steps`` optimizer steps; see the module docstring.

    Args:
        peak_flops: the peak FLOP/s of one device at the run's precision; ``None`` takes it from
            Lightning's table of GPUs (none for CPUs and unknown GPUs, so no ``perf/mfu``).
        window: optimizer steps the rates are averaged over, rounded up to a whole number of
            ``trainer.log_every_n_steps``.
    """

    def __init__(self, peak_flops: float | None = None, window: int = 10) -> None:
        self.peak_flops = peak_flops
        self.window = window
        self.flops_per_token: float | None = None  # of the model being trained, for the run summary
        self.available_flops: float | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self.flops_per_token = flops_per_token(pl_module.model.config)
        device = trainer.strategy.root_device
        self.available_flops = self.peak_flops or get_available_flops(
            device, compute_dtype(trainer.precision)
        )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The clock is read on the loggers' steps only: on a GPU a true reading means waiting for the
        # queued kernels, which every step would stall the queue. So the window holds one entry per
        # logging step, enough of them to span `window` optimizer steps.
        every = max(trainer.log_every_n_steps, 1)
        self._throughput = Throughput(
            available_flops=self.available_flops,
            world_size=trainer.world_size,
            window_size=max(2, -(-self.window // every) + 1),
        )
        self._t0 = time.perf_counter()
        self._steps = self._tokens = self._tokens_counted = 0
        self._last_step = trainer.global_step
        self._throughput.update(time=0.0, batches=0, samples=0, flops=0)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._tokens += batch[0].numel()  # this device's, micro-batch by micro-batch
        if trainer.global_step == self._last_step:
            return  # still accumulating: the optimizer step is not done
        self._last_step = trainer.global_step
        self._steps += 1
        if not is_logging_step(trainer, trainer.global_step):
            return
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()  # the steps' kernels are queued, not done, until here
        self._throughput.update(
            time=time.perf_counter() - self._t0,
            batches=self._steps,
            samples=self._tokens,
            # the FLOPs this device did since the last reading, at full context
            flops=int(self.flops_per_token * (self._tokens - self._tokens_counted)),
        )
        self._tokens_counted = self._tokens
        rates = self._throughput.compute()
        # seconds since training started, validations included: the x-axis of loss against time
        elapsed = {"perf/train_s": rates["time"]}
        if "device/batches_per_sec" not in rates:
            pl_module.log_dict(elapsed, on_step=True, on_epoch=False, rank_zero_only=True, batch_size=1)
            return  # the window is not full yet
        tokens_per_s = rates["device/samples_per_sec"] * trainer.world_size  # samples count tokens here
        metrics = {
            **elapsed,
            "perf/tokens_per_s": tokens_per_s,
            "perf/step_ms": 1000 / rates["device/batches_per_sec"],
        }
        if "device/mfu" in rates:
            metrics["perf/mfu"] = rates["device/mfu"]
        # logged from rank 0's timings; every rank runs in lockstep under data parallelism
        pl_module.log_dict(metrics, on_step=True, on_epoch=False, rank_zero_only=True, batch_size=1)
