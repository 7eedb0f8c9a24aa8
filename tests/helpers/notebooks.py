"""Run a notebook as a user would, for the notebook tests: in a fresh clone's layout, to the end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).parents[2] / "notebooks"


def fresh_clone(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shakespeare_path: Path) -> Path:
    """``notebooks/<name>`` copied into ``tmp_path/clone/notebooks/``, with no runs/ or data/ beside it.

    The kernel inherits the environment: CI's offline Tiny Shakespeare, and Jupyter's inline plots.
    """
    notebook = tmp_path / "clone" / "notebooks" / name
    notebook.parent.mkdir(parents=True)
    shutil.copy(NOTEBOOK_DIR / name, notebook)
    monkeypatch.setenv("NANOGPT_SHAKESPEARE_PATH", str(shakespeare_path))
    monkeypatch.delenv("MPLBACKEND", raising=False)
    return notebook


def execute(notebook: Path, probe: str, cwd: Path | None = None) -> tuple[nbformat.NotebookNode, dict]:
    """Run ``notebook`` top to bottom with ``probe`` appended; return it and the JSON line the probe prints.

    The working folder is the notebook's own (or ``cwd``), as in Jupyter; a failing cell, the
    notebook's own asserts included, raises ``CellExecutionError``.
    """
    nb = nbformat.read(notebook, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(probe))
    NotebookClient(nb, timeout=300, resources={"metadata": {"path": str(cwd or notebook.parent)}}).execute()
    stdout = "".join(out.text for out in nb.cells[-1].outputs if out.output_type == "stream")
    return nb, json.loads(stdout.strip().splitlines()[-1])


def shown(nb: nbformat.NotebookNode, kind: str) -> int:
    """How many outputs of ``kind`` (a MIME type, or "stream") the notebook's cells showed."""
    return sum(
        1
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if (out.output_type == "stream" if kind == "stream" else kind in out.get("data", {}))
    )


def printed(nb: nbformat.NotebookNode) -> str:
    """Everything the notebook's cells printed."""
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
