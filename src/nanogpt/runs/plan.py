"""The plan of a sweep, ``<sweep>/sweep.json`` (:class:`Plan`): what one ``nanogpt-train -m`` set out to run.

The sweep callback builds it before the first job (:func:`nanogpt.sweeps.callback.plan_sweep`): a
grid's jobs, numbered as Hydra's basic sweeper numbers them, or the number of trials asked of Optuna.
Read against the jobs that have folders, it names what never ran (:func:`unrun_grid_jobs`,
:func:`unrun_trials`), and whether that is still to come (:attr:`Plan.unrun_status`).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nanogpt.files import write_atomically
from nanogpt.runs.jobs import UNRUN, Job, is_alive

PLAN_FILE = "sweep.json"  # in the sweep folder; written by nanogpt.sweeps.callback, read here


@dataclass
class Plan:
    """What a sweep command set out to run (``sweep.json``), so that a report can name what never ran.

    A grid sweep knows its jobs in advance; an Optuna sweep knows only how many trials it asked for,
    and its folder also holds the trials of earlier commands that continued the same study.
    """

    jobs: list[list[str]] | None = None  # grid: every job's overrides, in job-number order
    trials: int | None = None  # Optuna: hydra.sweeper.n_trials of this command
    earlier_jobs: list[str] = field(default_factory=list)  # job folders already there at the start
    host: str | None = None  # the sweep's process, to tell a pending job from one that never ran
    pid: int | None = None
    ended: bool = False  # the sweep's process has finished (or been interrupted)

    def save(self, sweep_dir: str | os.PathLike) -> Path:
        """Write the plan as ``<sweep_dir>/sweep.json``."""
        return write_atomically(Path(sweep_dir) / PLAN_FILE, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, sweep_dir: str | os.PathLike) -> Plan | None:
        """The sweep's plan, or ``None`` for a sweep without one (older, or another sweeper's)."""
        try:
            saved = json.loads((Path(sweep_dir) / PLAN_FILE).read_text())
            return cls(**{k: v for k, v in saved.items() if k in cls.__dataclass_fields__})
        except (OSError, ValueError, TypeError, AttributeError):  # missing, or not a plan
            return None

    @property
    def unrun_status(self) -> str:
        """``pending`` while the sweep's process runs, else ``never_ran``."""
        running = not self.ended and is_alive(self.host, self.pid)
        return "pending" if running else "never_ran"


def unrun_grid_jobs(jobs: Sequence[Job], plan: Plan) -> list[Job]:
    """The planned grid jobs that have no job folder among ``jobs``, each with the plan's unrun status."""
    # A folder's overrides are the very list the sweeper passed to the launcher, so they identify
    # the planned job even when hydra.sweep.subdir does not name folders by job number. Counting
    # (not a set) keeps a grid that repeats a job (seed=1,1) right.
    ran = Counter(tuple(job.overrides) for job in jobs)
    unrun = []
    for number, overrides in enumerate(plan.jobs or []):
        if ran[tuple(overrides)] > 0:
            ran[tuple(overrides)] -= 1
        else:  # named by its job number, which is its folder's name under the default subdir
            unrun.append(Job(name=str(number), status=plan.unrun_status, overrides=list(overrides)))
    return unrun


def unrun_trials(jobs: Sequence[Job], plan: Plan | None) -> int:
    """How many of an Optuna command's ``n_trials`` have no job folder of their own."""
    if plan is None or plan.trials is None:
        return 0
    earlier = set(plan.earlier_jobs)
    started = sum(job.name not in earlier and job.status not in UNRUN for job in jobs)
    return max(plan.trials - started, 0)
