"""Files that are written whole or not at all.

Every file nanogpt writes for someone else to read (token files, ``meta.json``, ``result.json``,
reports, plots) goes through :func:`write_atomically`: a reader, or a crash mid-write, never sees
half a file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def write_atomically(path: str | os.PathLike, data: bytes | str | Callable[[IO[bytes]], None]) -> Path:
    """Write ``data`` beside ``path``, then rename it over ``path``.

    ``data`` is bytes, text (written as UTF-8), or a function that writes into the open binary file
    (e.g. ``lambda f: figure.savefig(f, format="png")``). The temporary file sits in the same folder,
    so the rename is atomic, and it is removed when writing fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
