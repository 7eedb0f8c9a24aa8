"""How the console scripts end on a user's mistake: the one-line message first, no traceback.

A ``ValueError`` or ``OSError`` (a missing file, a full disk) or ``FloatingPointError`` (a diverged
run) raised by nanogpt names its fix; a 20-line traceback printed before it would hide it. The
traceback stays one setting away (``HYDRA_FULL_ERROR=1``, Hydra's own switch) and, for a training
run, in its ``train.log``. Other exceptions are bugs and keep Hydra's traceback, as do the jobs of a
sweep, whose failures the sweeper records.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

USER_ERRORS = (ValueError, OSError, FloatingPointError)


@contextmanager
def user_errors_in_one_line(log_file: str | os.PathLike | None = None) -> Iterator[None]:
    """Turn a user error leaving the block into its message on stderr and exit code 1.

    ``log_file`` (a run's ``train.log``) is named as the traceback's place when it holds one.
    """
    try:
        yield
    except USER_ERRORS as err:
        multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or multirun:
            raise
        logged = (
            log_file is not None and Path(log_file).is_file() and "Traceback" in Path(log_file).read_text()
        )
        where = f"in {log_file}, or set" if logged else "set"
        print(f"{type(err).__name__}: {err}\n(traceback: {where} HYDRA_FULL_ERROR=1)", file=sys.stderr)
        sys.exit(1)
