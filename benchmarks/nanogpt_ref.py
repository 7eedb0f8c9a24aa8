"""karpathy/nanoGPT as a reference: a copy of the files a benchmark runs, its data prepared from our text.

The benchmarks that set nanogpt beside nanoGPT (``vs_nanogpt``, ``sample``, ``data``, ``gpu_check``)
take ``--nanogpt PATH``, a checkout of https://github.com/karpathy/nanoGPT. The files they run are
copied into the benchmark's own folder, so the checkout is left as it was, and its ``prepare.py``
finds the same Tiny Shakespeare the other rows read beside it (it downloads ``input.txt`` only when
that is missing).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from benchmarks.process import Run, run

TRAIN_FILES = ("train.py", "model.py", "configurator.py", "config/train_shakespeare_char.py")
SAMPLE_FILES = ("sample.py", "model.py", "configurator.py")


def missing(checkout: Path, files: Iterable[str]) -> str | None:
    """Why ``checkout`` is not a nanoGPT checkout with ``files``, or ``None`` when it is."""
    absent = [name for name in files if not (checkout / name).is_file()]
    if absent:
        return (
            f"{checkout} is not a checkout of karpathy/nanoGPT (no {', '.join(absent)}); pass --nanogpt PATH"
        )
    return None


def copy(checkout: Path, dest: Path, files: Iterable[str]) -> Path:
    """``files`` of ``checkout``, copied into ``dest`` at the same relative paths; ``dest``."""
    for name in files:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(checkout / name, dest / name)
    return dest


def prepare(
    checkout: Path, dest: Path, dataset: str, text: Path | None, log: Path, timeout: float | None = None
) -> Run:
    """nanoGPT's ``data/<dataset>/prepare.py``, copied to ``dest/data/<dataset>`` with ``text`` beside
    it as its ``input.txt``, and run there; its token files are written beside it."""
    folder = copy(checkout, dest, [f"data/{dataset}/prepare.py"]) / "data" / dataset
    if text is not None:
        shutil.copy(text, folder / "input.txt")
    return run([sys.executable, "prepare.py"], log, cwd=folder, timeout=timeout)


def commit(checkout: Path) -> str:
    """The short commit of ``checkout`` (empty when it is no git checkout)."""
    done = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return done.stdout.strip()
