"""How a training run writes its checkpoints, so that a crash or an interrupt loses little.

- :class:`AtomicCheckpointIO`: every checkpoint file is written beside its final name, then renamed
  over it. ``kill -9`` in the middle of a save leaves the previous file whole.
- :class:`LastCheckpoint`: ``last.ckpt`` in the run's checkpoint folder always holds the newest state: every
  ``every_n_train_steps`` steps, after every validation, when training ends, and on Ctrl-C or
  SIGTERM, both of which stop at the end of the current step. A step that validates is saved after
  its validation, so the file holds that step's val/loss and resumes exactly.
- :class:`RngState`: the checkpoint carries every random generator, so a resumed run draws the
  same dropout masks as an uninterrupted one.

Reading checkpoints back is :mod:`nanogpt.runs.checkpoint`'s job.
"""

from __future__ import annotations

import errno
import random
import shutil
import signal
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, Checkpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from nanogpt.files import disk_full, readable_size, write_atomically
from nanogpt.runs.folder import LAST_CKPT

INTERRUPTS = (KeyboardInterrupt, SIGTERMException)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``torch.save`` checkpoints, written to a temporary file in the same folder and renamed.

    Lightning's own writer goes through an fsspec transaction, which stages the file in the system's
    temporary folder and copies it over: across filesystems a kill mid-copy truncates the target.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        try:
            write_atomically(path, lambda f: torch.save(checkpoint, f))
        except (OSError, RuntimeError) as err:
            if disk_full(err) is None:
                raise
            # torch's writer reports a full disk as "[enforce fail at inline_container.cc] unexpected pos"
            folder = Path(path).parent
            size, free = (
                readable_size(tensor_bytes(checkpoint)),
                readable_size(shutil.disk_usage(folder).free),
            )
            raise OSError(
                errno.ENOSPC,
                f"disk full: no room to write {path} (a checkpoint of about {size}; {free} free on "
                f"{folder}); the previous {Path(path).name}, if any, is whole. Free some space, or set "
                "paths.checkpoint_dir to a disk with room",
            ) from err


def tensor_bytes(obj: Any) -> int:
    """The bytes of the tensors in a checkpoint's nested dicts and lists: about its size on disk."""
    if isinstance(obj, torch.Tensor):
        return obj.nbytes
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


class LastCheckpoint(Checkpoint):
    """Keep ``<dirpath>/last.ckpt`` at the newest state of the run; see the module docstring.

    Lightning's ``ModelCheckpoint`` writes its ``last.ckpt`` only together with a top-k save, and
    cannot save both on a step cadence and at every validation. As a ``Checkpoint`` this runs after
    ``ModelCheckpoint``, so the ``last.ckpt`` of a validation step knows that step's best model.

    Args:
        dirpath: the run's checkpoint folder.
        every_n_train_steps: also save every this many optimizer steps (``null``: only at
            validations, the end and interrupts); ``kill -9`` loses at most this many steps.
    """

    def __init__(self, dirpath: str, every_n_train_steps: int | None = None) -> None:
        self.path = Path(dirpath) / LAST_CKPT
        self.every_n_train_steps = every_n_train_steps
        self._saved_step: int | None = None
        self._ctrl_c = False
        self._at_once = False  # a second Ctrl-C: the step may be half done, so nothing is saved
        self._previous_handler: Any = None

    def _on_ctrl_c(self, signum: int, frame: Any) -> None:
        # The first Ctrl-C stops at the end of the current step, as Lightning does with SIGTERM: a
        # KeyboardInterrupt in the middle of a step (after the optimizer stepped, before Lightning
        # counted the batch) would save a state that resumes inconsistently. A second one exits now.
        if self._ctrl_c:
            self._at_once = True
            raise KeyboardInterrupt
        self._ctrl_c = True
        print("\nCtrl-C: stopping at the end of this step (press again to stop at once)", flush=True)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        try:
            self._previous_handler = signal.signal(signal.SIGINT, self._on_ctrl_c)
        except ValueError:  # not the main thread: leave Ctrl-C to Python
            self._previous_handler = None

    def _restore_ctrl_c(self) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking or self._saved_step == trainer.global_step:
            return
        trainer.save_checkpoint(self.path, weights_only=False)
        self._saved_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.every_n_train_steps and trainer.global_step % self.every_n_train_steps == 0:
            self._save(trainer)
        if self._ctrl_c:
            raise KeyboardInterrupt  # at a step boundary; Lightning's shutdown calls on_exception

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A validation changes the step's state (the val point of the loss history, best.ckpt's
        # score, the generators it drew from): it replaces a periodic save of the same step, which
        # Lightning's loop makes before it validates. (Telling in advance that a validation follows
        # needs Lightning's private loop state; two saves on such a step, every 1,500 steps with
        # the defaults, cost less than depending on it.)
        self._saved_step = None
        self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_ctrl_c()
        self._save(trainer)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        # Only interrupts: after a crash or a non-finite loss the state may be broken, and the
        # periodic last.ckpt is the one to resume from.
        self._restore_ctrl_c()
        if isinstance(exception, INTERRUPTS) and not self._at_once:
            # Lightning ignores further Ctrl-C while it shuts down; a second one should stop the save
            # and exit at once (the rename never happens, so the previous last.ckpt stays whole).
            signal.signal(signal.SIGINT, signal.default_int_handler)
            self._save(trainer)


class RngState(Callback):
    """Save and restore torch's (CUDA's too), NumPy's and Python's global random generators.

    The state is put back just before the first training step after a resume, not when the
    checkpoint is loaded: Lightning draws from torch's generator when it opens the data loaders,
    and the uninterrupted run had drawn that number before it saved. Under DDP the checkpoint holds
    rank 0's generators, which every rank then continues from.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        version, internal, gauss_next = random.getstate()
        state = {
            "torch": torch.get_rng_state(),
            "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
            "python": [version, list(internal), gauss_next],
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        torch.set_rng_state(state["torch"])
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
        version, internal, gauss_next = state["python"]
        random.setstate((version, tuple(internal), gauss_next))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
