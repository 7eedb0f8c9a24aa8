"""One job folder of a sweep, as its ``result.json`` describes it (:class:`Job`).

:func:`load_job` reads a job's ``result.json`` through its schema (:class:`nanogpt.runs.folder.Result`)
into a :class:`Job`, and tells a job that still runs from one that died without a result; a damaged
record makes a failed job that says what is wrong. :func:`val_against_time` reads a job's val/loss
against its seconds of training from its ``metrics.csv``.
"""

from __future__ import annotations

import bisect
import csv
import math
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from nanogpt.files import pid_alive
from nanogpt.runs.folder import HYDRA_RECORD, RESULT_FILE, Result, RunDir, parameter_count

# planned jobs without a result: the sweep still runs (pending) or has stopped (never_ran)
UNRUN = ("pending", "never_ran")
STATUSES = ("completed", "pruned", "interrupted", "failed", "running", *UNRUN)


def is_alive(host: str | None, pid: int | None) -> bool:
    """Whether the process that wrote a ``running`` result (or a sweep's plan) may still run.

    On this machine the process is looked up by its pid; another machine's job cannot be checked
    from here, so it counts as alive.
    """
    if not isinstance(pid, int):
        return False
    return host != socket.gethostname() or pid_alive(pid)


@dataclass
class Job:
    """One job of a sweep: a job folder as its ``result.json`` describes it, or a planned job with none."""

    name: str
    status: str  # one of STATUSES
    overrides: list[str]
    best_val_loss: float | None = None
    val_bleu: float | None = None
    step: int | None = None
    wall_time_s: float | None = None
    error: str | None = None
    val_curve: list[tuple[int, float]] = field(default_factory=list)
    parameters: int | None = None  # the model's trainable parameters
    path: Path | None = None  # the job's folder; None for a planned job that has none

    @property
    def scored(self) -> bool:
        """Completed with a finite best val/loss: ranked, and counted in seed statistics."""
        loss = self.best_val_loss
        return self.status == "completed" and loss is not None and math.isfinite(loss)

    @property
    def params(self) -> dict[str, str]:
        """The overrides as ``key -> value`` (a group choice such as ``model=gpt_tiny`` included)."""
        return dict(o.split("=", 1) if "=" in o else (o, "") for o in self.overrides)


def natural_key(name: str) -> list[Any]:
    """Sort key of job folder names: 0, 1, ..., 10 in numeric order, not 0, 1, 10, 2."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _read_overrides(job_dir: Path) -> list[str]:
    path = job_dir / HYDRA_RECORD / "overrides.yaml"
    if not path.is_file():
        return []
    return [str(o) for o in OmegaConf.load(path)]


def load_job(job_dir: Path) -> Job:
    """Read one job folder; a job that left no final result is ``failed`` unless it still runs."""
    try:
        result = Result.read(job_dir)
    except ValueError as err:  # a damaged record: the job is listed, with what is wrong
        return Job(
            job_dir.name, "failed", _read_overrides(job_dir), error=f"unreadable record: {err}", path=job_dir
        )
    if result is None or (result.status == "running" and not is_alive(result.host, result.pid)):
        result = result or Result(status="failed")
        status, error = "failed", "stopped without a result (killed, out of memory, or the machine went down)"
    else:
        status, error = result.status, result.error
    val_curve = [(s, v) for s, v in result.history.get("val/loss", []) if v is not None]
    best = result.best_val_loss
    if best is None and val_curve:
        best = min(v for _, v in val_curve)
    bleu = result.metrics.get("val/bleu")
    if bleu is None and result.history.get("val/bleu"):
        bleu = result.history["val/bleu"][-1][1]
    parameters = result.parameters
    if parameters is None and status == "completed":
        parameters = _parameters_from_config(job_dir)
    return Job(
        name=job_dir.name,
        status=status,
        overrides=result.overrides or _read_overrides(job_dir),
        best_val_loss=best,
        val_bleu=bleu,
        step=result.step,
        wall_time_s=result.wall_time_s,
        error=error,
        val_curve=val_curve,
        parameters=parameters,
        path=job_dir,
    )


def _parameters_from_config(job_dir: Path) -> int | None:
    """The parameter count of a record written before ``result.json`` held it, from ``config.yaml``."""
    run = RunDir.at(job_dir)
    if not run.config_file.is_file():
        return None
    try:
        model = OmegaConf.to_container(OmegaConf.load(run.config_file).get("model") or {}, resolve=True)
        return parameter_count(model) if model else None
    except (OSError, ValueError, TypeError):  # a config this nanogpt cannot build: no count, still a report
        return None


def val_against_time(job_dir: Path) -> list[tuple[float, float]]:
    """``(seconds of training, val/loss)`` at each validation of a job, from its ``metrics.csv``.

    ``perf/train_s`` (seconds since training started, earlier validations included) is logged at the
    logging steps; a validation between two of them gets the time interpolated between theirs.
    Empty when the job wrote no ``metrics.csv`` (no CSV logger) or timed no step (no throughput
    callback).
    """
    try:
        with RunDir.at(job_dir).metrics_csv.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        return []
    times = {
        int(float(r["step"])): float(r["perf/train_s"])
        for r in rows
        if r.get("step") and r.get("perf/train_s")
    }
    timed = sorted(times.items())
    steps = [s for s, _ in timed]
    points = []
    for r in rows:
        if not (r.get("step") and r.get("val/loss")):
            continue
        step = int(float(r["step"]))
        i = bisect.bisect_left(steps, step)
        if i < len(steps) and steps[i] == step:
            seconds = timed[i][1]
        elif 0 < i < len(steps):  # between two timed steps
            (s0, t0), (s1, t1) = timed[i - 1], timed[i]
            seconds = t0 + (t1 - t0) * (step - s0) / (s1 - s0)
        else:
            continue  # before the first or after the last timed step: no time to give it
        points.append((seconds, float(r["val/loss"])))
    return points


def is_job_folder(path: Path) -> bool:
    """A sub-folder of a sweep holding ``result.json`` or Hydra's ``.hydra/overrides.yaml``."""
    return path.is_dir() and (
        (path / RESULT_FILE).is_file() or (path / HYDRA_RECORD / "overrides.yaml").is_file()
    )
