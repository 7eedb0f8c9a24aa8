"""Probes into a nanogpt-train run, given on its command line: what the benchmarks read from inside a run.

A benchmark never patches the code it measures: it adds a callback to the run's config, as a user could,

    nanogpt-train ... +callbacks.phase_timer._target_=benchmarks.probes.PhaseTimer   # a Lightning callback
    nanogpt-train -m ... +hydra.callbacks.job_clock._target_=benchmarks.probes.JobClock \\
        +hydra.callbacks.job_clock.path=/tmp/clock.jsonl                              # a Hydra callback

and reads what it prints (a line that starts with its tag) or writes. ``nanogpt-train`` imports
them by name, so it needs the repository root on ``PYTHONPATH``, which every process the benchmarks
start has (:func:`benchmarks.process.environment`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from hydra.experimental.callback import Callback as HydraCallback
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback

# each line's format belongs to the suite that reads it, which imports no Lightning
from benchmarks.data import RSS
from benchmarks.gpu_check import FACTS
from benchmarks.train import PHASES, print_phases
from nanogpt.training.callbacks.throughput import ThroughputLogger


class PhaseTimer(Callback):
    """Time the parts of nanogpt-train's training steps as the plain loop of ``benchmarks.train`` does;
    print their medians when training ends (``benchmarks.train.print_phases``).

    Lightning's step runs ``training_step`` and ``zero_grad`` (forward), then ``backward``, then the
    clipping and optimizer step; "batch and hooks" is the rest, from one step's end to the next's start.
    """

    def __init__(self) -> None:
        self.timings: dict[str, list[float]] = {name: [] for name in PHASES}
        self._marks: dict[str, float] = {}
        self._end: float | None = None

    def on_train_batch_start(self, *args: object) -> None:
        self._marks["start"] = time.perf_counter()
        if self._end is not None:
            self.timings["batch and hooks"].append(self._marks["start"] - self._end)

    def on_before_backward(self, *args: object) -> None:
        self._marks["forward"] = time.perf_counter()

    def on_after_backward(self, *args: object) -> None:
        self._marks["backward"] = time.perf_counter()

    def on_train_batch_end(self, *args: object) -> None:
        self._end = end = time.perf_counter()
        marks = self._marks
        self.timings["forward"].append(marks["forward"] - marks["start"])
        self.timings["backward"].append(marks["backward"] - marks["forward"])
        self.timings["clip and optimizer step"].append(end - marks["backward"])

    def on_validation_start(self, *args: object) -> None:
        self._end = None  # the time across a validation is not a step's

    def on_train_end(self, *args: object) -> None:
        print_phases(self.timings)


def rss_mib() -> tuple[float, float]:
    """This process's resident set and its anonymous part (what it allocated), in MiB."""
    kib = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS", "RssAnon")):
            kib[line.split(":")[0]] = int(line.split()[1])
    return kib["VmRSS"] / 1024, kib["RssAnon"] / 1024


class RssAtSteps(Callback):
    """Print the process's RSS after step 10 and after the last step: ``RSS <step> <rss> <anonymous>``."""

    def on_train_batch_end(self, trainer: Trainer, *args: object) -> None:
        if trainer.global_step in (10, trainer.max_steps):
            rss, anonymous = rss_mib()
            print(f"\n{RSS}{trainer.global_step} {rss:.1f} {anonymous:.1f}", flush=True)


class RunFacts(Callback):
    """When training ends, print what no logger records: the device, the model's FLOPs per token and
    the peak GPU memory, as ``<FACTS>{json}``."""

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        device = trainer.strategy.root_device
        cuda = device.type == "cuda"
        throughput = next(c for c in trainer.callbacks if isinstance(c, ThroughputLogger))
        facts = {
            "device": torch.cuda.get_device_name(device) if cuda else "cpu",
            "flops_per_token": throughput.flops_per_token,
            "peak_gpu_bytes": torch.cuda.max_memory_allocated(device) if cuda else None,
        }
        print(FACTS + json.dumps(facts), flush=True)


class JobClock(HydraCallback):
    """A Hydra callback that appends ``{"event", "job", "t"}`` lines to ``path`` (wall-clock seconds)
    when each job of a sweep starts and when the sweep ends."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def _note(self, event: str, job: int | None) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"event": event, "job": job, "t": time.time()}) + "\n")

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        self._note("job_start", int(config.hydra.job.num))

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        self._note("multirun_end", None)
