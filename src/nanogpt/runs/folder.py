"""The run folder: its layout, its ``result.json``, who may write into it, and which checkpoint it means.

One run of ``nanogpt-train`` owns one folder (``runs/<name>/<time>_<suffix>``, named by
:mod:`nanogpt.runs.names`)::

    config.yaml          the config as it trained (the spec's derived config), resolved
    result.json          :class:`Result`: running, then completed, interrupted, failed or pruned
    train.log            the console's log, and a failure's traceback
    loss.png             the loss curves
    checkpoints/         best.ckpt (lowest val/loss) and last.ckpt (newest state); the folder is
                         paths.checkpoint_dir, and result.json records where it is
    csv/, tensorboard/, wandb/   the loggers' folders; csv/metrics.csv holds every logged value
    .hydra/              Hydra's own record of the command

This module is the only place that layout is spelled. It imports neither Lightning nor Hydra, so the
tools that only read runs (``nanogpt-sample``, ``nanogpt-eval``, ``nanogpt-report``) start fast.

- :class:`RunDir`: the paths of one run folder; :meth:`RunDir.open` finds an existing run's
  checkpoint folder from its ``result.json``.
- :class:`Result`: the typed ``result.json``, read and written strictly; :func:`parameter_count` is
  what its ``parameters`` counts.
- :func:`claim`: take a folder for a new run, refuse one that holds another run, or accept it back
  as the same SLURM job requeued; :func:`check_free` is its check alone, which writes nothing.
- :func:`resolve_checkpoint`: which file ``ckpt_path`` means (a file, a run folder, or ``last``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from nanogpt.files import remove_stale_temps, write_atomically

if TYPE_CHECKING:  # the model (and torch) only when a count is made
    from nanogpt.model import GPTConfig

CHECKPOINTS = "checkpoints"  # the default checkpoint folder, inside the run folder
LAST_CKPT = "last.ckpt"  # the newest state: what training resumes from
BEST_CKPT = "best.ckpt"  # the lowest val/loss: what sampling and evaluation read
RESULT_FILE = "result.json"
CONFIG_FILE = "config.yaml"
LOG_FILE = "train.log"
METRICS_CSV = "csv/metrics.csv"  # where configs/logger/csv.yaml has Lightning's CSVLogger write
HYDRA_RECORD = ".hydra"  # Hydra's own record of the command: config.yaml, hydra.yaml, overrides.yaml
HPC_CKPT_GLOB = "hpc_ckpt_*.ckpt"  # Lightning's SLURM auto-requeue checkpoint, in the run folder

STATUSES = ("running", "completed", "interrupted", "failed", "pruned")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunDir:
    """The paths of one run folder; ``checkpoint_dir`` is ``<path>/checkpoints`` unless the run chose one."""

    path: Path
    checkpoint_dir: Path

    @classmethod
    def at(cls, path: str | os.PathLike, checkpoint_dir: str | os.PathLike | None = None) -> RunDir:
        """The run folder ``path``, keeping its checkpoints in ``checkpoint_dir`` (default: its own)."""
        path = Path(path)
        return cls(path, Path(checkpoint_dir) if checkpoint_dir else path / CHECKPOINTS)

    @classmethod
    def open(cls, path: str | os.PathLike) -> RunDir:
        """An existing run folder, with the checkpoint folder its ``result.json`` records."""
        result = Result.read(path)
        return cls.at(path, result.checkpoint_dir if result else None)

    @property
    def result_file(self) -> Path:
        return self.path / RESULT_FILE

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def log_file(self) -> Path:
        return self.path / LOG_FILE

    @property
    def metrics_csv(self) -> Path:
        """The CSV logger's ``metrics.csv``: a row per logging step and per validation."""
        return self.path / METRICS_CSV

    @property
    def last(self) -> Path:
        return self.checkpoint_dir / LAST_CKPT

    @property
    def best(self) -> Path:
        return self.checkpoint_dir / BEST_CKPT

    @property
    def recorded_checkpoint_dir(self) -> str | None:
        """What ``result.json`` records as the checkpoint folder: ``None`` for the run's own."""
        return None if self.checkpoint_dir == self.path / CHECKPOINTS else str(self.checkpoint_dir)


@dataclass
class Result:
    """``result.json``: what became of a run. Every field but ``status`` may be missing (``None``).

    Written by :mod:`nanogpt.training.record` while the run trains (and by the sweep callback for a job
    that failed before its record started); read by ``nanogpt-report``, ``ckpt_path=<run>``, and a
    requeued SLURM job. Strict both ways: an unknown key or a value of the wrong type is an error,
    so a reader never guesses. It is strict JSON: a NaN or infinite metric is written as ``null``,
    and ``non_finite`` names it and its value.
    """

    status: Literal["running", "completed", "interrupted", "failed", "pruned"]
    name: str | None = None  # the experiment's name (cfg.name)
    overrides: list[str] = field(default_factory=list)  # the command's overrides, as typed
    seed: int | None = None
    host: str | None = None  # with pid: tells a running job from a killed one
    pid: int | None = None
    started: str | None = None  # ISO time
    checkpoint_dir: str | None = None  # where the run keeps its checkpoints (None: <run>/checkpoints)
    slurm_job_id: str | None = None  # a requeued SLURM job knows its own folder by it
    step: int | None = None  # optimizer steps done
    parameters: int | None = None  # the model's trainable parameters (parameter_count), once known
    wall_time_s: float | None = None
    best_val_loss: float | None = None
    best_ckpt: str | None = None
    # the headline: best_ckpt's loss on the whole val split (nanogpt.training.validation), what
    # nanogpt-eval prints for it; best_val_loss is the best of the validations (data.eval_batches)
    final_val_loss: float | None = None
    final_val_tokens: int | None = None  # the val tokens it scored
    final_val_batches: int | None = None  # data.final_eval_batches, when it capped them (None: whole split)
    final_val_step: int | None = None  # the step best_ckpt was saved at
    metrics: dict[str, float | None] = field(default_factory=dict)  # the final callback metrics
    history: dict[str, list[tuple[int, float | None]]] = field(default_factory=dict)  # (step, value)
    error: str | None = None  # why a run failed, was interrupted, or was pruned ("pruned at step N")
    resume: str | None = None  # the command that continues the run
    non_finite: dict[str, str] = field(default_factory=dict)  # fields written as null: their value

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {self.status!r}")

    @classmethod
    def from_json(cls, data: Any, where: str = RESULT_FILE) -> Result:
        """Check a parsed ``result.json`` against the schema; a ``ValueError`` names what is wrong."""
        if not isinstance(data, dict):
            raise ValueError(f"{where} is not a JSON object")
        unknown = sorted(set(data) - set(_CHECKS))
        if unknown:
            raise ValueError(f"{where} has unknown keys {unknown}; it was not written by this nanogpt")
        if data.get("status") is None:
            raise ValueError(f"{where} has no status")
        for key, value in data.items():
            kind, check = _CHECKS[key]
            if value is not None and not check(value):
                raise ValueError(f"{where}: {key} is {value!r}, not {kind}")
        values = {k: v for k, v in data.items() if v is not None}
        if "history" in values:
            values["history"] = {k: [(s, v) for s, v in pts] for k, pts in values["history"].items()}
        return cls(**values)

    @classmethod
    def read(cls, run_dir: str | os.PathLike) -> Result | None:
        """The run's ``result.json``; ``None`` when it has none, a ``ValueError`` when it is damaged."""
        path = Path(run_dir) / RESULT_FILE
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(text)
        except ValueError as err:
            raise ValueError(f"{path} is not JSON ({err}); it was cut short or edited by hand") from None
        return cls.from_json(data, str(path))

    def to_json(self) -> dict[str, Any]:
        """The fields as strict JSON values: NaN and infinities become ``null``, noted in ``non_finite``."""
        non_finite: dict[str, str] = {}
        data = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            # leave out what was never set, so a record reads as what the run knew
            if f.name != "non_finite" and value not in (None, {}, []):
                data[f.name] = _finite_or_none(value, f.name, non_finite)
        if self.non_finite or non_finite:
            data["non_finite"] = {**self.non_finite, **non_finite}
        return data

    def dumps(self) -> str:
        """The record as the text of ``result.json``, checked against the schema as a reader checks it."""
        data = self.to_json()
        Result.from_json(data, f"the {RESULT_FILE} to write")
        return json.dumps(data, indent=2, allow_nan=False) + "\n"

    def write(self, run_dir: str | os.PathLike) -> Path:
        """Write ``<run_dir>/result.json`` whole (never half a file)."""
        return write_atomically(Path(run_dir) / RESULT_FILE, self.dumps())


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _mapping(values: Any, check: Any) -> bool:
    return isinstance(values, dict) and all(isinstance(k, str) and check(v) for k, v in values.items())


def _point(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and _integer(value[0])
        and (value[1] is None or _number(value[1]))
    )


# every key of result.json: what its value must be (besides null), and the test of it
_CHECKS: dict[str, tuple[str, Any]] = {
    "status": (f"one of {', '.join(STATUSES)}", lambda v: v in STATUSES),
    "name": ("a string", _text),
    "overrides": ("a list of strings", lambda v: isinstance(v, list) and all(map(_text, v))),
    "seed": ("an integer", _integer),
    "host": ("a string", _text),
    "pid": ("an integer", _integer),
    "started": ("a string", _text),
    "checkpoint_dir": ("a string", _text),
    "slurm_job_id": ("a string", _text),
    "step": ("an integer", _integer),
    "parameters": ("an integer", _integer),
    "wall_time_s": ("a number", _number),
    "best_val_loss": ("a number", _number),
    "best_ckpt": ("a string", _text),
    "final_val_loss": ("a number", _number),
    "final_val_tokens": ("an integer", _integer),
    "final_val_batches": ("an integer", _integer),
    "final_val_step": ("an integer", _integer),
    "metrics": ("names mapped to numbers", lambda v: _mapping(v, lambda x: x is None or _number(x))),
    "history": (
        "names mapped to [step, value] lists",
        lambda v: _mapping(v, lambda pts: isinstance(pts, list) and all(map(_point, pts))),
    ),
    "error": ("a string", _text),
    "resume": ("a string", _text),
    "non_finite": ("names mapped to strings", lambda v: _mapping(v, _text)),
}
assert set(_CHECKS) == {f.name for f in dataclasses.fields(Result)}, "every field of Result is checked"


def parameter_count(model: GPTConfig | Mapping[str, Any]) -> int:
    """The trainable parameters of the GPT ``model`` configures, a tied weight once.

    Every parameter counts, position embeddings too (unlike the console's nanoGPT-style count), so
    an ablation that drops one (``model.position=rope``) shows in a report. The model is built on
    the meta device: shapes without memory, so counting GPT-2 XL takes no 6 GB. ``model`` is a run's
    :class:`~nanogpt.model.GPTConfig`, or the ``model`` section of a finished run's ``config.yaml``,
    whose keys that are no field of it (``init_from``: where the weights start, not their shape) are
    left out.
    """
    import torch  # here, not at the top: the readers of run folders start without torch

    from nanogpt.model import GPT, GPTConfig

    if not isinstance(model, GPTConfig):
        names = {f.name for f in dataclasses.fields(GPTConfig)}
        model = GPTConfig(**{k: v for k, v in model.items() if k in names})
    with torch.device("meta"):
        gpt = GPT(model)
    return gpt.num_params(non_embedding=False)


def _finite_or_none(value: Any, path: str, non_finite: dict[str, str]) -> Any:
    """``value`` as JSON: tuples as lists, every NaN or infinite float ``None`` (noted in ``non_finite``)."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:  # tensors, numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        non_finite[path] = str(value)
        return None
    if isinstance(value, dict):
        return {str(k): _finite_or_none(v, f"{path}.{k}", non_finite) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v, f"{path}[{i}]", non_finite) for i, v in enumerate(value)]
    return value


def requeued_job(env: Mapping[str, str] | None = None) -> str | None:
    """The SLURM job id when this process is a requeued SLURM job, else ``None``.

    SLURM keeps the job id across requeues and counts them in ``SLURM_RESTART_COUNT``.
    """
    env = os.environ if env is None else env
    job, restarts = env.get("SLURM_JOB_ID"), env.get("SLURM_RESTART_COUNT", "0")
    if not job or not restarts.isdigit() or int(restarts) == 0:
        return None
    return job


def check_free(run: RunDir, env: Mapping[str, str] | None = None, before_hydra: bool = False) -> bool:
    """Refuse ``run`` when it holds another run; return whether it is this requeued SLURM job's own.

    Nothing is written. A folder holds another run when it has a ``result.json`` or files in its
    checkpoint folder; ``before_hydra`` (asked before Hydra writes its ``.hydra/`` record and opens
    ``train.log``) also counts those, and ``config.yaml``, as another run's.
    """
    job = requeued_job(env)
    existing = _readable(run)
    if job is not None and existing is not None and existing.slurm_job_id == job:
        return True
    if existing is not None or run.result_file.exists():
        raise FileExistsError(
            f"{run.path} already holds another run's {RESULT_FILE}; a run never writes into another's "
            "folder. Leave hydra.run.dir unset (each run gets a new folder), or choose a new one; "
            f"continue that run with ckpt_path={run.path}"
        )
    if run.checkpoint_dir.is_dir() and any(run.checkpoint_dir.iterdir()):
        raise FileExistsError(
            f"{run.checkpoint_dir} already holds checkpoints of another run, which this run would "
            "overwrite. Use a new output folder (every run gets one unless hydra.run.dir or "
            "paths.checkpoint_dir is set), or continue that run with ckpt_path=<its checkpoint>"
        )
    records = [run.path / name for name in (HYDRA_RECORD, LOG_FILE, CONFIG_FILE)]
    if before_hydra and (found := [p.name for p in records if p.exists()]):
        raise FileExistsError(
            f"{run.path} already holds another run's {' and '.join(found)}; a run never writes into "
            "another's folder. Leave hydra.run.dir unset (each run gets a new folder), or choose a new one"
        )
    return False


def claim(run: RunDir, first: Result, rank: int = 0, env: Mapping[str, str] | None = None) -> bool:
    """Take ``run`` for a new run by writing ``first`` as its ``result.json``; return whether it is a requeue.

    - A folder that holds another run is refused with a ``FileExistsError`` (:func:`check_free`),
      before anything in it changes.
    - A requeued SLURM job (``SLURM_RESTART_COUNT`` > 0) comes back to the folder whose
      ``result.json`` records its job id, and is let in (``True``): it resumes there.
    - Ranks other than 0 join the folder rank 0 claimed (Lightning's launcher passes it to them)
      and write nothing.

    The first ``result.json`` is created exclusively, so of two processes given the same folder only
    one gets it.
    """
    if rank != 0:
        return requeued_job(env) is not None
    if check_free(run, env):
        first.write(run.path)  # the same job, requeued: its record starts again
        return True
    run.path.mkdir(parents=True, exist_ok=True)
    # written whole beside its name, then linked to it: a link fails when the name exists, so of two
    # processes claiming one folder at once exactly one succeeds, and no reader sees half a file
    tmp = write_atomically(run.path / f".{RESULT_FILE}.claim-{os.getpid()}", first.dumps())
    try:
        os.link(tmp, run.result_file)
    except FileExistsError:
        raise FileExistsError(
            f"{run.path} was claimed by another run at the same moment; leave hydra.run.dir unset, or "
            "give each run its own"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    return False


def _readable(run: RunDir) -> Result | None:
    try:
        return Result.read(run.path)
    except ValueError:
        return None


def requeue_checkpoint(run: RunDir) -> Path | None:
    """What a requeued SLURM job resumes from: ``None`` when Lightning saved its own ``hpc_ckpt``
    (which it finds by itself), else the run's ``last.ckpt``, if any.

    Lightning's auto-requeue (SIGUSR1 before the time limit) saves ``hpc_ckpt_<n>.ckpt`` in the run
    folder; a job requeued without that warning (preempted, ``scontrol requeue``) continues from the
    run's ``last.ckpt`` instead of starting over in it.
    """
    if any(run.path.glob(HPC_CKPT_GLOB)):
        return None
    return run.last if run.last.is_file() else None


def keep_metrics_before_requeue(run: RunDir, env: Mapping[str, str] | None = None) -> list[Path]:
    """Rename the run's ``metrics.csv`` files to ``metrics.before-requeue-<n>.csv``; return the new paths.

    Lightning's CSV logger deletes a ``metrics.csv`` it finds in its folder, which would lose what
    the job logged before it was requeued; the file beside it keeps those rows.
    """
    restart = (os.environ if env is None else env).get("SLURM_RESTART_COUNT", "0")
    return [
        path.rename(path.with_name(f"metrics.before-requeue-{restart}.csv"))
        for path in run.path.glob("*/metrics.csv")
    ]


def resolve_checkpoint(
    ckpt_path: str | os.PathLike | None,
    which: Literal["last", "best"],
    runs_of: Path | None = None,
    exclude: Path | None = None,
) -> Path:
    """The checkpoint file that ``ckpt_path`` means.

    - a file: itself;
    - a run folder: its ``last.ckpt`` (``which="last"``, to resume) or ``best.ckpt`` (to sample or
      evaluate), in the checkpoint folder its ``result.json`` records;
    - ``last`` (with ``runs_of``, the experiment's folder of runs): the newest run there that has a
      ``last.ckpt``, sweep jobs included, ``exclude`` (the new run's own folder) left out.
    """
    example = f"runs/<experiment>/<time>/{CHECKPOINTS}/{which}.ckpt"
    if ckpt_path is None or str(ckpt_path) == "":
        raise FileNotFoundError(
            f"no checkpoint given; pass ckpt_path={example} (or the run folder runs/<experiment>/<time>)"
        )
    if str(ckpt_path) == "last" and runs_of is not None:
        return latest_run(runs_of, exclude).last
    path = Path(ckpt_path).expanduser()
    if path.is_dir():
        run = RunDir.open(path)
        file = run.last if which == "last" else run.best
        if not file.is_file():
            # a run killed (kill -9) in its first save left only that save's temporary file
            removed = remove_stale_temps(run.checkpoint_dir) if run.checkpoint_dir.is_dir() else []
            killed = (
                f"; removed {', '.join(p.name for p in removed)}, the first save of a run killed while "
                "writing it: that run saved no checkpoint, start it again"
                if removed
                else ""
            )
            raise FileNotFoundError(
                f"ckpt_path={ckpt_path} is a folder without {file.name} (looked in "
                f"{run.checkpoint_dir}){killed}; pass a run folder written by nanogpt-train or a .ckpt file"
            )
        return file
    if not path.is_file():
        raise FileNotFoundError(
            f"ckpt_path={ckpt_path} does not exist; pass a checkpoint file or run folder, "
            f"e.g. ckpt_path={example}"
        )
    return path


def latest_run(runs_of: Path, exclude: Path | None = None) -> RunDir:
    """The newest run folder under ``runs_of`` (sweep jobs too) that has a ``last.ckpt``; logs the pick."""
    skip = exclude.resolve() if exclude else None
    runs = []
    for record in runs_of.glob(f"**/{RESULT_FILE}"):
        if skip is not None and record.parent.resolve() == skip:
            continue
        try:
            run = RunDir.open(record.parent)
        except ValueError:
            continue  # a damaged record: not a run to resume
        if run.last.is_file():
            runs.append(run)
    if not runs:
        raise FileNotFoundError(
            f"ckpt_path=last: no earlier run of name={runs_of.name} under {runs_of} has a {LAST_CKPT}; "
            "train one first, or pass ckpt_path=<run folder or .ckpt file>"
        )
    run = max(runs, key=lambda r: r.last.stat().st_mtime)
    log.info("ckpt_path=last: resuming the newest run of %s, %s", runs_of.name, run.path)
    return run
