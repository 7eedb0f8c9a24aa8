"""Files that are written whole or not at all.

Every file nanogpt writes for someone else to read (checkpoints, a downloaded text, ``result.json``,
reports, plots) goes through :func:`write_atomically`: a reader, or a crash mid-write, never sees
half a file (a prepared token folder is built whole under a temporary name instead; see
:mod:`nanogpt.data.corpus`). A process killed mid-write (``kill -9``) leaves its temporary file
behind, named with its host and pid, so :func:`remove_stale_temps` can later tell it from a write
still going on. A write that fails for a full disk is told by :func:`disk_full`, and its message
gives sizes as :func:`readable_size` writes them.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

_TEMP = re.compile(r"^\..+\.pid(\d+)\.(.+)\.tmp$")


def write_atomically(path: str | os.PathLike, data: bytes | str | Callable[[IO[bytes]], None]) -> Path:
    """Write ``data`` beside ``path``, then rename it over ``path``.

    ``data`` is bytes, text (written as UTF-8), or a function that writes into the open binary file
    (e.g. ``lambda f: figure.savefig(f, format="png")``). The temporary file sits in the same folder,
    so the rename is atomic, and it is removed when writing fails (a full disk too).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = f".pid{os.getpid()}.{socket.gethostname()}.tmp"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
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


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this machine (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files in ``folder`` left by killed writers on this host; return them.

    Temporaries of live processes, and of other hosts sharing the disk, are left alone.
    """
    removed = []
    host = socket.gethostname()
    for path in Path(folder).glob(".*.tmp"):
        match = _TEMP.match(path.name)
        if match and match[2] == host and not pid_alive(int(match[1])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def disk_full(err: BaseException | None) -> OSError | None:
    """The full disk (or quota) behind ``err``, if any: an ``OSError`` of errno ENOSPC or EDQUOT in
    ``err`` or the errors it was raised from (torch's writer reports one as a ``RuntimeError``,
    ``datasets`` wraps its writers' in a ``DatasetGenerationError``)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def readable_size(n: float) -> str:
    """Bytes as a person (and ``df -H``) reads them: 830 bytes, 347.8 KB, 1.4 GB."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
