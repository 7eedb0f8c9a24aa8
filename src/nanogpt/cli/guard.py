"""The Hydra callback that guards ``nanogpt-train``'s run folder before Hydra writes into it.

Configured in ``configs/hydra/default.yaml``; it runs in the application, before the job starts.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from nanogpt.runs.folder import RunDir, check_free


class RunFolderGuard(Callback):
    """A Hydra callback that checks a run's folder before Hydra writes anything into it.

    Hydra makes the run folder, opens its ``train.log`` and writes its ``.hydra/`` record before the
    task function starts, so :func:`~nanogpt.runs.folder.claim` alone would refuse another run's folder
    (``hydra.run.dir=<an existing run>``) only after its Hydra record was rewritten. Before that:

    - a ``name`` that would put the run outside ``paths.log_dir`` (``name=../../x``) is refused;
    - a folder that holds another run is refused (a requeued SLURM job's own is let in);
    - a folder that cannot be made or written (a read-only ``paths.log_dir``) is named.

    Each refusal is one line and exit code 1; a callback's exception would only be a warning to Hydra.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if rank_zero_only.rank != 0:
            return  # the other ranks join the folder rank 0 checked (and by now claimed)
        self._check(config, lambda: Path(config.hydra.run.dir), check_run=True)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, lambda: Path(config.hydra.sweep.dir), check_run=False)

    @staticmethod
    def _check(config: DictConfig, folder_of: Callable[[], Path], check_run: bool) -> None:
        try:
            check_name(config.get("name"), config.paths.log_dir)
            folder = folder_of()
            writable_folder(folder)
            if check_run:
                check_free(RunDir.at(folder), before_hydra=True)
        except (ValueError, OSError) as err:
            raise SystemExit(f"{type(err).__name__}: {err}") from None


def check_name(name: Any, log_dir: str) -> None:
    """Refuse a run ``name`` that is not a folder path inside ``paths.log_dir``."""
    if name is None:
        return
    parts = Path(str(name)).parts
    if not parts or Path(str(name)).is_absolute() or ".." in parts:
        raise ValueError(
            f"name={name} would put the run outside paths.log_dir={log_dir}; a name is a folder inside "
            "it (it may hold /, not .. or a leading /): pass e.g. name=ablation/rope, or set paths.log_dir"
        )


def writable_folder(folder: Path) -> None:
    """A ``PermissionError`` naming ``folder``, and the fix, when it (or the folder Hydra would make
    it in) cannot be written; nothing is created."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(
            f"cannot write the run folder {folder}: {existing} is not a folder you can write; set "
            "paths.log_dir to one you can (or hydra.run.dir / hydra.sweep.dir)"
        )
