"""How a job of a sweep starts its processes: the strategy a multi-device job trains with.

Lightning's ``ddp`` launcher re-runs the whole command in each extra rank, which under
``nanogpt-train -m`` would re-run the sweep, and under Optuna give the ranks of one job different
hyperparameters. :func:`sweep_strategy` picks an in-process launcher instead (``ddp_spawn``), or
refuses what cannot be made correct; the sweep callback checks it before the first job
(:mod:`nanogpt.sweeps.callback`), and the job's spec applies it (:mod:`nanogpt.training.spec`).
"""

from __future__ import annotations

import os

from omegaconf import DictConfig

from nanogpt.devices import processes_per_job

# Strategies whose launcher re-runs the whole command in each extra rank (Lightning's subprocess
# script launcher), and the strategy that starts the same ranks in-process instead.
RERUNNING_DDP = {
    "ddp": "ddp_spawn",
    "ddp_find_unused_parameters_true": "ddp_spawn_find_unused_parameters_true",
}


def processes_start_outside() -> bool:
    """Whether a cluster launcher (torchrun, SLURM's srun) started this process as one rank of many.

    Lightning then launches nothing itself, so no strategy re-runs the command.
    """
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    return TorchElasticEnvironment.detect() or (
        SLURMEnvironment.detect() and int(os.environ.get("SLURM_NTASKS", "1")) > 1
    )


def sweep_strategy(trainer: DictConfig, launched_outside: bool = False) -> str | None:
    """The strategy a job of a sweep (``nanogpt-train -m``) trains with, or ``None`` to keep its own.

    A job that starts several processes cannot use a launcher that re-runs the command: under
    ``-m`` that re-runs the sweep, and under Optuna gives the ranks of one job different
    hyperparameters. ``ddp`` becomes ``ddp_spawn``, which starts the ranks from inside the job with
    its own config. What cannot be made correct is refused, with the reason.

    Args:
        trainer: the job's ``trainer`` config.
        launched_outside: the ranks were started by torchrun or SLURM (see
            :func:`processes_start_outside`): every rank is already this job, so nothing changes.
    """
    processes = processes_per_job(trainer)
    strategy = trainer.get("strategy", "auto")
    if processes <= 1 or launched_outside:
        return None
    if int(trainer.get("num_nodes", 1) or 1) > 1:
        raise ValueError(
            f"a sweep job on trainer.num_nodes={trainer.num_nodes} machines cannot be started from this "
            "one process. Launch each job on the cluster, where SLURM starts its ranks "
            "(hydra/launcher=submitit_slurm, see the README's Scaling section), or sweep on one machine "
            "(trainer.num_nodes=1)"
        )
    if strategy in (None, "auto"):
        strategy = "ddp"  # what Lightning picks for several devices
    if not isinstance(strategy, str):
        target = str(strategy.get("_target_", "a configured object"))
        if "FSDP" not in target:
            raise ValueError(
                f"trainer.strategy is {target}, which nanogpt-train -m cannot check for a launcher that "
                "re-runs the sweep in every rank; give it by name (trainer.strategy=ddp becomes ddp_spawn), "
                "or run this configuration as its own nanogpt-train command"
            )
        strategy = "fsdp"
    if strategy.startswith("ddp_spawn") or strategy.startswith("ddp_fork") or strategy == "ddp_notebook":
        return None  # these start their ranks in-process already
    if strategy in RERUNNING_DDP:
        return RERUNNING_DDP[strategy]
    raise ValueError(
        f"trainer.strategy={strategy} starts {processes} processes per job by re-running the command, which "
        "under nanogpt-train -m would re-run the sweep in every rank, and Lightning has no in-process "
        "launcher for it. Run each configuration as its own nanogpt-train command (e.g. in a shell loop), "
        "launch the jobs on a cluster (hydra/launcher=submitit_slurm), or sweep with trainer=ddp"
    )
