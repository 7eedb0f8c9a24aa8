"""The record of one training run in its folder: ``result.json`` (:class:`nanogpt.runs.folder.Result`) and
``config.yaml``, for the run's own summary, resuming, and sweep reports (:mod:`nanogpt.runs.report`).

:class:`RunRecord` wraps a run: entering it claims the folder with a ``running`` result (with host
and pid, so a report can tell a running job from a killed one); ``save_config`` writes the config
the run trains with, once it is derived; leaving it
writes ``completed`` with the best and final metrics (``pruned at step N`` for a trial its Optuna
pruner stopped), ``interrupted`` (Ctrl-C, SIGTERM) with the
command that resumes it, or ``failed`` with the error. Each carries the step reached, the wall time,
the model's parameter count (from the config ``save_config`` writes) and the loss history of the
run's :class:`~nanogpt.training.callbacks.curves.LossCurves`, and ends with a summary on the console and in
``train.log``: the final val/loss (``best.ckpt`` on the whole val split) and the best of the
validations, each saying what it scored, the checkpoints, and the commands that sample from and
resume the run. A failed run's traceback goes to ``train.log`` only.
Under DDP only global rank 0 writes.
"""

from __future__ import annotations

import logging
import math
import os
import shlex
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import OmegaConf

from nanogpt.files import write_atomically
from nanogpt.runs.folder import Result, RunDir, claim, parameter_count
from nanogpt.training.callbacks.curves import LossCurves

if TYPE_CHECKING:
    from nanogpt.training.spec import RunSpec

log = logging.getLogger(__name__)


def task_overrides() -> list[str]:
    """The command-line (or sweep) overrides of this job, as Hydra recorded them."""
    if not HydraConfig.initialized():
        return []
    # unresolved: an override's value may be an interpolation (x=${paths.output_dir}), kept as typed
    return list(OmegaConf.to_container(HydraConfig.get().overrides.task, resolve=False))


def interrupted_by(error: BaseException | None) -> signal.Signals | None:
    """The signal behind an exception that ends a run: SIGINT (Ctrl-C), SIGTERM, or ``None``.

    Lightning turns Ctrl-C into ``SystemExit(1)`` after its shutdown, raised while handling the
    ``KeyboardInterrupt``, and SIGTERM into its ``SIGTERMException``.
    """
    if isinstance(error, SIGTERMException):
        return signal.SIGTERM
    if isinstance(error, KeyboardInterrupt) or (
        isinstance(error, SystemExit) and isinstance(error.__context__, KeyboardInterrupt)
    ):
        return signal.SIGINT
    return None


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises Lightning's ``SIGTERMException`` in the main thread.

    Python's default for SIGTERM ends the process at once: a run set up its data and model (which
    can take minutes) would leave ``running`` in its record and its tokenizer's worker processes
    behind. Raised instead, it unwinds like Ctrl-C: the workers are stopped, the record says
    ``interrupted by SIGTERM`` and the command exits 143. Inside ``fit`` Lightning's own handling
    takes over (it stops at the end of a step), so the block ends before it.
    """

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SIGTERMException(128 + signal.SIGTERM)

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: SIGTERM keeps what it had
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# README's "Resuming": a larger trainer.max_steps stretches the cosine, which moves the learning rate
TRAIN_LONGER = (
    "to train longer, resume with a larger trainer.max_steps: the learning rate then moves at the\n"
    "  resume step (the cosine decays to the new end); to train longer on one curve, set\n"
    "  scheduler.decay_steps to the final length from the first run on"
)


def val_split_words(batches: int | None) -> str:
    """What a validation of ``batches`` batches (``None``: every window) scores, in words."""
    return "the whole val split" if batches is None else f"{batches} batches of the val split"


class RunRecord:
    """Record one training run in its folder; see the module docstring.

    Use as ``with RunRecord(run, name, seed) as record: ...; record.save_config(spec); ...;
    metrics = record.complete(trainer)``. Entering claims the folder (:func:`nanogpt.runs.folder.claim`):
    a folder of another run is refused before anything in it changes. An exception
    (``KeyboardInterrupt`` too) leaving the block marks the run failed or interrupted and goes on up.
    """

    def __init__(self, run: RunDir, name: str | None = None, seed: int | None = None) -> None:
        self.run = run
        self.trainer: L.Trainer | None = None
        self.spawned_step = 0  # the step reached by ranks that trained in child processes (ddp_spawn)
        self.requeued = False  # set on entering: a requeued SLURM job came back to its own folder
        self.eval_batches: int | None = None  # data.eval_batches: what a validation scores
        self.result = Result(
            status="running",
            name=name,
            overrides=task_overrides(),
            seed=seed,
            host=socket.gethostname(),
            pid=os.getpid(),
            checkpoint_dir=run.recorded_checkpoint_dir,
            # a requeued job knows its own folder by it
            slurm_job_id=os.environ.get("SLURM_JOB_ID") or None,
        )

    def __enter__(self) -> RunRecord:
        self.started = time.time()
        self.result.started = datetime.fromtimestamp(self.started).isoformat(timespec="seconds")
        self.requeued = claim(self.run, self.result, rank=rank_zero_only.rank)
        return self

    @rank_zero_only
    def save_config(self, spec: RunSpec) -> None:
        """Write ``config.yaml``: the spec's derived config, resolved, as the run trains with it; the
        record takes its seed (a resumed run goes on with its checkpoint's) and its model's parameter
        count (from the spec's model config, not the built model: under FSDP a rank's model holds
        only its shard)."""
        cfg = spec.cfg
        self.result.seed = cfg.get("seed")
        self.eval_batches = OmegaConf.select(cfg, "data.eval_batches")
        self.result.parameters = parameter_count(spec.model)
        write_atomically(self.run.config_file, OmegaConf.to_yaml(cfg, resolve=True))

    def watch(self, trainer: L.Trainer) -> None:
        """Take the step reached and the loss history from ``trainer`` when the run ends."""
        self.trainer = trainer

    def complete(self, trainer: L.Trainer, final_val: dict[str, Any] | None = None) -> dict[str, Any]:
        """Mark the run completed; return its final metrics, step, best val/loss and best checkpoint,
        and ``final_val`` (the ``final_val_*`` fields of
        :func:`~nanogpt.training.validation.final_validation`), which the record takes too."""
        self.trainer = trainer
        self._recover_spawned_ranks(trainer)
        metrics: dict[str, Any] = {k: v.item() for k, v in trainer.callback_metrics.items()}
        metrics["step"] = max(trainer.global_step, self.spawned_step)
        self._take_best(trainer)
        if self.result.best_val_loss is not None:
            metrics["best_val_loss"] = self.result.best_val_loss
            metrics["best_ckpt"] = self.result.best_ckpt
        for key, value in (final_val or {}).items():
            setattr(self.result, key, value)
        metrics.update(final_val or {})
        self.result.status = "completed"
        self.result.metrics = {k: v for k, v in metrics.items() if isinstance(v, float)}
        return metrics

    def prune(self, trainer: L.Trainer, step: int) -> dict[str, Any]:
        """Mark the run pruned by its Optuna trial at ``step``; return what :meth:`complete` returns,
        with ``pruned_at_step``."""
        metrics = self.complete(trainer)
        self.result.status, self.result.error = "pruned", f"pruned at step {step}"
        return {**metrics, "pruned_at_step": step}

    def _take_best(self, trainer: L.Trainer) -> None:
        """The best val/loss and its checkpoint, as ``best.ckpt``'s callback ranks them; a run that
        stops early (Ctrl-C in a validation, a failure) keeps the best it saved."""
        checkpoint = trainer.checkpoint_callback
        if isinstance(checkpoint, ModelCheckpoint) and checkpoint.best_model_score is not None:
            self.result.best_val_loss = checkpoint.best_model_score.item()
            self.result.best_ckpt = checkpoint.best_model_path

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        signum = interrupted_by(error)
        if signum is not None:
            how = "Ctrl-C" if signum == signal.SIGINT else signum.name
            self.result.status, self.result.error = "interrupted", f"interrupted by {how}"
        elif error is not None:
            self.result.status, self.result.error = "failed", f"{type(error).__name__}: {error}"
        self.result.wall_time_s = time.time() - self.started
        if self.trainer is not None and error is not None:
            try:
                self._recover_spawned_ranks(self.trainer)
                self._take_best(self.trainer)
            except Exception as err:  # the record of a failure must not fail
                log.warning("could not read the state of the run's ranks from its last.ckpt: %s", err)
        if self.run.last.is_file():
            self.result.resume = self.resume_command()
        self._write()
        self._summarise(error if signum is None else None)

    def resume_command(self) -> str:
        """The ``nanogpt-train`` command that continues this run from its ``last.ckpt``."""
        overrides = [o for o in self.result.overrides if not o.startswith(("ckpt_path=", "+ckpt_path="))]
        return shlex.join(["nanogpt-train", *overrides, f"ckpt_path={self.run.path}"])

    @rank_zero_only
    def _summarise(self, error: BaseException | None) -> None:
        """Log how the run ended (console and train.log); a failure's traceback goes to train.log only."""
        result, run = self.result, self.run
        where = "before training" if result.step is None else f"at step {result.step}"
        lines = [f"run {result.status} {where} after {result.wall_time_s:.0f} s: {run.path}"]
        if result.error and result.status != "pruned":  # the first line says where it was pruned
            lines.append(f"  error           {result.error}")
        # the numbers of result.json, so the console and the record never disagree, each saying what it scored
        final = result.final_val_loss
        if final is not None and math.isfinite(final):
            what = val_split_words(result.final_val_batches)
            lines.append(
                f"  final val/loss  {final:.4f}  best.ckpt (step {result.final_val_step}) on {what}, "
                f"{result.final_val_tokens:,} tokens; nanogpt-eval prints it too"
            )
        best = result.best_val_loss
        if best is not None and math.isfinite(best):
            steps = [s for s, v in result.history.get("val/loss", []) if v == best]
            at = f" at step {steps[0]}" if steps else ""
            what = f"{val_split_words(self.eval_batches)} (data.eval_batches)"
            lines.append(f"  best val/loss   {best:.4f}  of the validations{at}, on {what}")
        for path, what in [(run.best, "lowest val/loss"), (run.last, "newest state")]:
            if path.is_file():
                lines.append(f"  {what:<15} {path}")
        if run.best.is_file():
            lines.append(f"  sample with     nanogpt-sample ckpt_path={shlex.quote(str(run.path))}")
        if result.resume:
            lines.append(f"  resume with:\n    {result.resume}")
            if result.status == "completed":
                lines.append(f"  {TRAIN_LONGER}")
        log.info("\n".join(lines))
        if error is not None:
            # file-only: nanogpt's DEBUG records go to train.log, not the console (configs/hydra/default.yaml)
            log.debug("the error's traceback", exc_info=(type(error), error, error.__traceback__))

    def _recover_spawned_ranks(self, trainer: L.Trainer) -> None:
        """Take back the state of a run whose ranks trained in child processes (``ddp_spawn``).

        This process's trainer then gets only what Lightning hands back (the final metrics and the
        best checkpoint's path), not the step, the loss history or the best score. The run's newest
        ``last.ckpt``, written by rank 0 at its last step, holds them all.
        """
        last = self.run.last
        if trainer.global_step > 0 or self.spawned_step or not last.is_file():
            return  # this process trained (or the state is back already)
        checkpoint = torch.load(last, map_location="cpu", weights_only=True)
        if checkpoint.get("global_step", 0) <= trainer.global_step:
            return  # this process trained: its own state is the newest
        self.spawned_step = checkpoint["global_step"]
        for callback in trainer.callbacks:
            state = checkpoint.get("callbacks", {}).get(callback.state_key)
            if state is not None and isinstance(callback, (LossCurves, ModelCheckpoint)):
                callback.load_state_dict(state)

    @rank_zero_only
    def _write(self) -> None:
        if self.trainer is not None:
            self.result.step = max(self.trainer.global_step, self.spawned_step)
            curves = next((c for c in self.trainer.callbacks if isinstance(c, LossCurves)), None)
            if curves is not None:
                self.result.history = {k: list(v) for k, v in curves.history.items()}
        self.result.write(self.run.path)
