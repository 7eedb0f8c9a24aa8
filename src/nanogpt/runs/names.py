"""The name of a run's folder, ``<time>_<suffix>``, one for every process of the run.

Hydra names the folder in each process it starts, before training; the ranks of one run must agree:

- Lightning's own launcher (``trainer=ddp`` on one machine) passes rank 0's folder to the ranks it
  starts (``hydra.run.dir=...``), so they never name one.
- ``torchrun`` starts every rank itself, on every machine, with clocks and random suffixes of their
  own. Global rank 0 names the run and posts the name in torchrun's key-value store (the TCPStore
  that ``torch.distributed`` uses to start up, at ``MASTER_ADDR:MASTER_PORT``); the other ranks
  read it from there.
- ``srun`` tasks of a SLURM job (``hydra/launcher=submitit_slurm``, or a hand-written sbatch) are
  named after the job: ``slurm-<job id>`` (``.<step id>`` for an ``srun`` step). Submitit's jobs
  are named by their sweep.
- A requeued SLURM job (Lightning's auto-requeue, or a preemption) comes back to the folder it ran
  in, sbatch or submitit alike, and resumes there (:func:`nanogpt.runs.folder.claim`).
"""

from __future__ import annotations

import os
import secrets
import time
from datetime import timedelta

from omegaconf import OmegaConf

STORE_TIMEOUT = timedelta(minutes=10)  # how long the other ranks wait for rank 0's name


def new_name(pattern: str) -> str:
    """A fresh name: the time as ``pattern`` (strftime) and 6 random hex digits."""
    return f"{time.strftime(pattern)}_{secrets.token_hex(3)}"


def under_torchrun() -> bool:
    """Whether torchrun started this process as one rank of several."""
    return "TORCHELASTIC_RUN_ID" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def slurm_name() -> str | None:
    """The folder name of this SLURM job's ranks, or ``None`` outside a SLURM batch job."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    # Lightning's own test: a job, but not an interactive shell (salloc, srun --pty bash)
    if not SLURMEnvironment.detect() or "SUBMITIT_FOLDER" in os.environ:
        return None
    name = f"slurm-{os.environ['SLURM_JOB_ID']}"
    step = os.environ.get("SLURM_STEP_ID")
    return f"{name}.{step}" if step and step.isdigit() else name


def shared_name(pattern: str) -> str:
    """Rank 0's :func:`new_name`, through torchrun's store: every rank of the launch gets the same."""
    from torch.distributed import TCPStore

    rank = int(os.environ["RANK"])
    # Torchrun's agent hosts the store, or else rank 0 does, as torch.distributed's start-up does it:
    # multi-tenant, so that start-up later reuses this server instead of failing to bind the port.
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        int(os.environ["WORLD_SIZE"]),
        is_master=rank == 0 and not agent_store,
        timeout=STORE_TIMEOUT,
        multi_tenant=True,
    )
    # a restarted launch (torchrun --max-restarts) names a new run
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    key = f"nanogpt/run_name/{os.environ['TORCHELASTIC_RUN_ID']}/{restart}"
    if rank == 0:
        name = new_name(pattern)
        store.set(key, name)
        return name
    return store.get(key).decode()


def run_name(pattern: str = "%Y-%m-%d_%H-%M-%S") -> str:
    """The ``${run_name:<strftime pattern>}`` resolver of ``configs/hydra/default.yaml``."""
    if under_torchrun():
        return shared_name(pattern)
    return slurm_name() or new_name(pattern)


def register_resolvers() -> None:
    """Register the resolvers ``configs/hydra/default.yaml`` names its run and sweep folders with.

    ``run_suffix``: 6 random hex digits, cached like Hydra's own ``${now:}``, so every job of a sweep
    (which Hydra composes from the first config's resolver cache) shares one sweep folder.
    ``run_name``: the whole name of a run folder (:func:`run_name`), agreed by every rank of a
    torchrun or SLURM launch. The application registers them before Hydra composes
    (:mod:`nanogpt.cli.train`); importing this module registers nothing.
    """
    OmegaConf.register_new_resolver("run_suffix", lambda: secrets.token_hex(3), use_cache=True, replace=True)
    OmegaConf.register_new_resolver("run_name", run_name, use_cache=True, replace=True)
