"""The job's side of an Optuna search's pruning: a Lightning callback that reports to its trial.

The study, its storage and the step a pruned trial stopped at are :mod:`nanogpt.sweeps.study`'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lightning as L
from lightning.pytorch.callbacks import Callback

from nanogpt.sweeps.study import PRUNED_AT

if TYPE_CHECKING:
    import optuna


class PruneTrial(Callback):
    """Report ``val/loss`` to the job's Optuna trial at every validation; stop the run when the
    study's pruner says the trial is worse than the others were at the same step.

    Rank 0 reports and asks; every rank gets its answer, and the trainer stops at the end of the
    step just validated (Lightning's public ``should_stop``, as early stopping does). The step is
    kept in the trial (user attribute ``pruned_at_step``), where the process that started the ranks
    (``ddp_spawn``) and the sweeper read it.
    """

    def __init__(self, trial: optuna.Trial, monitor: str = "val/loss") -> None:
        self.trial = trial
        self.monitor = monitor

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        step = trainer.global_step
        prune = False
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.is_global_zero and value is not None:
            self.trial.report(float(value), step)
            prune = self.trial.should_prune()
            if prune:
                self.trial.set_user_attr(PRUNED_AT, step)
        if trainer.strategy.broadcast(prune, src=0):
            trainer.should_stop = True
