"""The texts the benchmarks read: Tiny Shakespeare, and larger texts made of it.

A larger text is Tiny Shakespeare again and again, with a line of non-ASCII characters now and then,
so that the vocabulary and Python's string width are those of a real corpus, not of plain ASCII.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

EXTRA = "Café — naïve “quoted” 日本語 ½"
DEFAULT = "data/shakespeare_char/input.txt"  # where nanogpt-train's default data config downloads it


def shakespeare(default: str | None = DEFAULT) -> Path | None:
    """Tiny Shakespeare: ``NANOGPT_SHAKESPEARE_PATH``, else ``default``; the benchmark stops when
    ``default`` is given and no such file exists, and ``None`` when there is no default."""
    given = os.environ.get("NANOGPT_SHAKESPEARE_PATH") or default
    if given is None:
        return None
    if not Path(given).is_file():
        sys.exit(f"no text at {given}; set NANOGPT_SHAKESPEARE_PATH=/path/to/input.txt (Tiny Shakespeare)")
    return Path(given)


def repeated(dest: Path, mb: float, source: Path) -> int:
    """Write ``source`` followed by the extra line, repeated to about ``mb`` MiB, into ``dest``; its size."""
    copy = source.read_bytes() + (EXTRA + "\n").encode()
    with dest.open("wb") as f:
        for _ in range(max(1, round(mb * 2**20 / len(copy)))):
            f.write(copy)
    return dest.stat().st_size


def shuffled_lines(folder: Path, gb: float, source: Path, file_bytes: int = 64 << 20) -> int:
    """Write about ``gb`` GB of ``source``'s lines, in a seeded random order with the extra line one
    time in a hundred, as files of ``file_bytes`` into ``folder``; the bytes written."""
    lines = source.read_text().splitlines()
    rng = random.Random(0)
    folder.mkdir(parents=True)
    target, written, part = int(gb * 2**30), 0, 0
    while written < target:
        path = folder / f"part-{part:05d}.txt"
        with path.open("w") as f:
            size = 0
            while size < file_bytes and written + size < target:
                block = "\n".join(rng.choice(lines) if rng.random() > 0.01 else EXTRA for _ in range(10_000))
                size += f.write(block + "\n")  # characters, close to bytes for this text
        written += path.stat().st_size
        part += 1
    return written
