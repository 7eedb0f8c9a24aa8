"""``result.json``: the outcome of one run, written into its folder for sweep reports to read.

``train()`` writes it three times: ``running`` when the run starts (with its host and pid, so a
report can tell a running job from a killed one), then ``completed`` or ``failed`` at the end,
with the best and final metrics, the step reached, the wall time and the val-loss history.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

RESULT_FILE = "result.json"


def write_result(output_dir: str | os.PathLike, result: dict[str, Any]) -> Path:
    """Write ``result`` as ``<output_dir>/result.json``."""
    text = json.dumps(result, indent=2, default=_jsonable) + "\n"
    return write_text_atomically(Path(output_dir) / RESULT_FILE, text)


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """Write beside ``path``, then rename over it: a reader (or a crash) never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_result(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The run's ``result.json``, or ``None`` when it has none or it cannot be parsed."""
    path = Path(run_dir) / RESULT_FILE
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) else None


def is_alive(result: dict[str, Any]) -> bool:
    """Whether the process that wrote a ``running`` result may still run.

    On this machine the process is looked up by its pid; another machine's job cannot be checked
    from here, so it counts as alive.
    """
    pid = result.get("pid")
    if not isinstance(pid, int):
        return False
    if result.get("host") != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, but belongs to another user
    return True


def _jsonable(value: Any) -> Any:
    # tensors and numpy scalars from Lightning's metrics
    if hasattr(value, "item"):
        return value.item()
    return str(value)
