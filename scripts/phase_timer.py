"""A Lightning callback for ``benchmark.py profile``: nanogpt-train's step, timed in the plain loop's parts.

Kept out of ``benchmark.py``, which the plain loop runs and which therefore never imports Lightning.
"""

from __future__ import annotations

import time

from lightning.pytorch.callbacks import Callback

from benchmark import PHASES, print_phases


class PhaseTimer(Callback):
    """Time the parts of nanogpt-train's training steps as ``benchmark.py``'s plain loop does; print medians.

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
