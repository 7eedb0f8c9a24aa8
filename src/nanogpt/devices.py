"""What this machine can run, said before Lightning fails in its own words.

- A GPU trainer (``trainer=gpu``, ``ddp``, or a recipe built on them) on a machine without CUDA is
  refused with the CPU recipe and override that work here.
- :func:`processes_per_job`: how many training processes a trainer config starts (devices x nodes);
  :func:`local_rank`: which of its machine's processes this one is, before Lightning knows.
- :func:`inference_device`: the device ``nanogpt-sample`` and ``nanogpt-eval`` run on, one this
  machine lacks refused with those it has.
- bf16 on a CPU without native bf16 instructions (AVX512-BF16 or AMX) is emulated: about 7x slower
  than float32 (255 s against 36 s for 250 steps of the CPU recipe on an AVX2-only AMD EPYC), so it
  is warned about once at start.
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Mapping
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig

log = logging.getLogger(__name__)

GPU_ACCELERATORS = ("gpu", "cuda")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bf16() -> bool:
    """Whether this x86 CPU computes in bf16 natively; True where it cannot be told (other CPUs)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return True  # Arm and Apple CPUs: not measured here, so no warning
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True
    return any(flag in flags.split() for flag in NATIVE_BF16_FLAGS)


def chosen_experiment() -> str | None:
    """The experiment the command chose (``experiment=...``), as Hydra recorded it; ``None`` without
    one, or where no Hydra app runs (a config composed in a test or a notebook).

    Not ``cfg.name``: that names the run folder, and ``name=bpe`` is no experiment.
    """
    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().runtime.choices.get("experiment")


def check_trainer_fits_machine(trainer: DictConfig, experiment: str | None = None) -> None:
    """Refuse a GPU trainer without CUDA, naming ``experiment`` (the one the command chose, if any);
    warn about emulated bf16 on this CPU."""
    accelerator = str(trainer.get("accelerator", "auto"))
    cuda = torch.cuda.is_available()
    if accelerator in GPU_ACCELERATORS and not cuda:
        recipe = f"experiment={experiment}" if experiment else "this run"
        raise ValueError(
            f"{recipe} trains on a GPU (trainer.accelerator={accelerator}), and this machine has no CUDA "
            "device. Train the CPU recipe with experiment=shakespeare_char_cpu, or this one on the CPU "
            "with trainer=cpu (or trainer.accelerator=cpu), which is much slower for GPU-sized models"
        )
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not cuda)
    if on_cpu and str(trainer.get("precision", "")).startswith("bf16") and not cpu_has_native_bf16():
        log.warning(
            "trainer.precision=%s on a CPU without native bf16 (no AVX512-BF16 or AMX): PyTorch emulates "
            "it, about 7x slower than float32. Use trainer.precision=32-true on this machine",
            trainer.get("precision"),
        )


def processes_per_job(trainer: DictConfig) -> int:
    """How many processes Lightning will start for this trainer config (devices x nodes)."""
    devices = trainer.get("devices", "auto")
    nodes = int(trainer.get("num_nodes", 1) or 1)
    if isinstance(devices, (list, ListConfig)):
        count = len(devices)
    elif isinstance(devices, str) and "," in devices:
        count = len([d for d in devices.split(",") if d.strip()])
    elif str(devices).strip().lstrip("-").isdigit() and int(devices) > 0:
        count = int(devices)
    else:  # -1 or "auto": every device of the accelerator; CPUs count as one
        accelerator = str(trainer.get("accelerator", "auto"))
        count = torch.cuda.device_count() if accelerator in ("auto", "gpu", "cuda") else 1
    return max(count, 1) * nodes


def local_rank(env: Mapping[str, str] | None = None) -> int:
    """This process's rank among its machine's processes, from what its launcher set: ``LOCAL_RANK``
    (torchrun, and Lightning's own launcher for its extra ranks), or ``SLURM_LOCALID`` (srun's tasks).

    Known before Lightning has set up its strategy, which is when a run prepares its data.
    """
    env = os.environ if env is None else env
    for key in ("LOCAL_RANK", "SLURM_LOCALID"):
        if env.get(key, "").isdigit():
            return int(env[key])
    return 0


def inference_device(device: str) -> str:
    """The device ``nanogpt-sample`` or ``nanogpt-eval`` runs on: ``auto`` is cuda when there is a CUDA
    device, else cpu. One this machine lacks is refused with the values that work here."""
    device = str(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ValueError(
            f"device={device} is not a device torch knows; pass device=auto, cpu or cuda"
        ) from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        lacks = (
            "this torch has no CUDA (a CPU-only build)"
            if torch.version.cuda is None
            else "this machine has no CUDA device"
        )
        raise ValueError(f"device={device}, but {lacks}; pass device=cpu or device=auto")
    count = torch.cuda.device_count()
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= count:
        there = f"{count} CUDA device{'s' * (count != 1)}"
        which = "cuda:0" if count == 1 else f"one of cuda:0 to cuda:{count - 1}"
        raise ValueError(f"device={device}, but this machine has {there}; pass device={which}")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(
            f"device={device}, but this machine has no Apple GPU (MPS); pass device=cpu or device=auto"
        )
    return device
