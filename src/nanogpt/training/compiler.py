"""When a run compiles its model, and where the compiled kernels are kept between runs.

``compile: auto`` (configs/train.yaml) compiles the training step when that pays:

- when this machine has compiled the same training step before: PyTorch's persistent caches
  (Inductor's FX graph cache and the AOTAutograd cache) then hold its kernels, and compiling costs
  seconds instead of a minute. A run that compiled leaves a small marker beside those caches
  (:class:`CompiledStep`), which is how a later run knows;
- when the run is long enough to pay for compiling from nothing (:data:`AUTO_MIN_STEPS`);
- never without a working C compiler (C++ on the CPU): Inductor builds its kernels with one, and a
  fresh machine may have none. The run stays eager and says why.

``compile: true`` compiles regardless (and so warms the cache for later runs), refusing at once
when there is no compiler; ``compile: false`` never compiles. Only the training step is compiled:
validation runs the same model eagerly (a compiled forward under ``inference_mode`` is another
graph to compile, and the final validation's short last batch a third), and the model's weights,
hence checkpoints, are those of the plain module.

The caches live in :func:`cache_dir`: ``compile_cache_dir`` in the config, else
``$TORCHINDUCTOR_CACHE_DIR`` when set, else ``~/.cache/nanogpt/torch-compile``
(``$XDG_CACHE_HOME`` honoured), given to PyTorch through its documented ``TORCHINDUCTOR_CACHE_DIR``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch

from nanogpt.files import write_atomically
from nanogpt.model import GPTConfig

log = logging.getLogger(__name__)

# A cold compile of the CPU recipe's training step costs 36-67 s on 2 cores and saves 10-20 ms of its
# ~60 ms step, so it pays back from ~3,000-5,000 steps (docs/benchmarks.md, "Compiled training");
# nanoGPT's GPU recipe trains 5,000 steps.
AUTO_MIN_STEPS = 5000
# what compile accepts, from YAML or the command line
SETTINGS = (True, False, "auto")


# TORCHINDUCTOR_CACHE_DIR as it was before use_cache_dir first set it in this process: a sweep job
# with its own compile_cache_dir must not become the next job's default
_UNSET = object()
_users_cache_dir: object = _UNSET


def cache_dir(configured: str | None = None) -> Path:
    """The folder of the compile caches: ``configured``, ``$TORCHINDUCTOR_CACHE_DIR`` (as the user
    set it, not as an earlier run in this process did), or the default."""
    if configured:
        return Path(configured).expanduser()
    users = os.environ.get("TORCHINDUCTOR_CACHE_DIR") if _users_cache_dir is _UNSET else _users_cache_dir
    if users:
        return Path(str(users))
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nanogpt" / "torch-compile"


def use_cache_dir(folder: Path) -> None:
    """Point PyTorch's compile caches (Inductor's and AOTAutograd's, Triton's under it) at ``folder``.

    PyTorch reads ``TORCHINDUCTOR_CACHE_DIR`` when it compiles, in this process and in its compile
    workers, so setting it before the first compile is enough.
    """
    global _users_cache_dir
    if _users_cache_dir is _UNSET:
        _users_cache_dir = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)


def on_cuda(trainer_cfg: Any) -> bool:
    """Whether the run's trainer will train on CUDA (``accelerator`` auto/gpu/cuda with a GPU here)."""
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    return torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")


@functools.lru_cache(maxsize=2)
def working_compiler(cuda: bool) -> str | None:
    """The compiler Inductor would build kernels with, if it compiles a tiny program; else ``None``.

    On the CPU Inductor writes C++ (``$CXX``, else g++ as torch looks for on Linux, else clang++); on
    CUDA, Triton builds its launchers with a C compiler (``$CC``, else cc, gcc, clang). Checked once
    per process, so a sweep's later jobs pay nothing.
    """
    env, names, suffix = ("CC", ("cc", "gcc", "clang"), ".c") if cuda else ("CXX", ("g++", "clang++"), ".cpp")
    candidates = [os.environ[env]] if os.environ.get(env) else list(names)
    for name in candidates:
        path = shutil.which(name)
        if path is None:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / f"probe{suffix}"
            source.write_text("int main(void) { return 0; }\n")
            try:
                done = subprocess.run(
                    [path, str(source), "-o", str(Path(tmp) / "probe")], capture_output=True, timeout=60
                )
            except (OSError, subprocess.TimeoutExpired):
                continue
            if done.returncode == 0:
                return path
    return None


def step_key(model: dict, batch_size: int, precision: Any, cuda: bool) -> str:
    """What identifies a compiled training step on this machine: the model's shape, the batch, the
    precision, the device and torch's version. The marker of a compiled step is named by it."""
    device = torch.cuda.get_device_name() if cuda else "cpu"
    parts = {"model": model, "batch_size": batch_size, "precision": str(precision), "device": device}
    parts["torch"] = torch.__version__
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def decide(
    setting: Any,
    *,
    max_steps: int | None,
    warm: bool,
    find_compiler: Callable[[], str | None],
    cuda: bool,
) -> tuple[bool, str]:
    """Whether the run compiles its training step, and why, in a few words for the log.

    ``warm``: whether this machine compiled the same step before; ``find_compiler`` is
    :func:`working_compiler`, asked only when the answer matters. ``compile=true`` without a
    compiler is refused with the fix.
    """
    if setting not in SETTINGS:
        raise ValueError(f"compile must be true, false or auto, got {setting!r}; set compile=auto")
    kind = "C" if cuda else "C++"
    if setting is False:
        return False, "compile=false"
    if setting is True:
        if find_compiler() is None:
            raise ValueError(
                f"compile=true needs a working {kind} compiler to build the compiled kernels, and none was "
                f"found ({'$CC, cc, gcc, clang' if cuda else '$CXX, g++, clang++'}); install one (e.g. apt "
                "install g++) or set compile=auto, which trains eagerly without one"
            )
        return True, "compile=true"
    if not warm and (max_steps is None or max_steps < AUTO_MIN_STEPS):
        return False, (
            "compile=auto: not compiling, as this machine has not compiled this training step before and "
            f"{max_steps} steps are too few to pay for a first compile (from {AUTO_MIN_STEPS:,}); "
            "compile=true compiles it and keeps the kernels for the runs after"
        )
    if find_compiler() is None:
        return (
            False,
            f"compile=auto: not compiling, as no working {kind} compiler was found; training eagerly",
        )
    if warm:
        return (
            True,
            "compile=auto: compiling, with this training step's kernels in the cache from an earlier run",
        )
    return True, f"compile=auto: compiling, as {max_steps:,} steps pay for a first compile"


def step_marker(cfg: Any, model: GPTConfig) -> Path:
    """The marker a compiled run of ``cfg`` and ``model`` leaves (or finds)."""
    cuda = on_cuda(cfg.trainer)
    key = step_key(dataclasses.asdict(model), cfg.data.batch_size, cfg.trainer.get("precision"), cuda)
    return cache_dir(cfg.get("compile_cache_dir")) / "nanogpt-steps" / f"{key}.json"


def planned_steps(trainer: Any) -> int | None:
    """The training steps a run will take: ``trainer.max_steps``, or Lightning's ``fast_dev_run``
    batches (``true`` is one, as ``debug=fdr`` sets it), which stop the run whatever ``max_steps`` says."""
    fast_dev_run = trainer.get("fast_dev_run")
    if fast_dev_run:
        return 1 if fast_dev_run is True else int(fast_dev_run)
    return trainer.get("max_steps")


def choose_compile(cfg: Any, model: GPTConfig) -> Path | None:
    """Whether the run ``cfg`` of ``model`` compiles its training step, logging why: the step's
    marker (:class:`CompiledStep` writes it) when it does, else ``None``. Points PyTorch's caches at
    :func:`cache_dir` when the run compiles."""
    cuda = on_cuda(cfg.trainer)
    marker = step_marker(cfg, model)
    compiled, why = decide(
        cfg.get("compile", False),
        max_steps=planned_steps(cfg.trainer),
        warm=marker.is_file(),
        find_compiler=lambda: working_compiler(cuda),
        cuda=cuda,
    )
    log.info(why)
    if not compiled:
        return None
    use_cache_dir(marker.parent.parent)
    return marker


class CompiledStep(L.Callback):
    """Times the first (compiling) training step, and marks the step as compiled on this machine.

    The marker, a small JSON file beside PyTorch's caches, is what ``compile: auto`` reads in a
    later run; it records how long this first step took.
    """

    def __init__(self, marker: Path, warm: bool) -> None:
        self.marker, self.warm = marker, warm
        self.started: float | None = None
        self.done = False

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if self.started is None:
            self.started = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.done or self.started is None:
            return
        self.done = True
        seconds = time.perf_counter() - self.started
        if trainer.is_global_zero:
            log.info(
                "compiled the training step in %.1f s (its first step; %s cache in %s)",
                seconds,
                "warm" if self.warm else "cold",
                self.marker.parent.parent,
            )
            record = {"first_step_s": round(seconds, 2), "warm": self.warm, "torch": torch.__version__}
            record["at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            self.marker.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self.marker, json.dumps(record, indent=1) + "\n")
