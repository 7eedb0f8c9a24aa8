"""The suites of ``python -m benchmarks``: their names, one line about each, and their command lines."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

# each is the module benchmarks/<name>.py, whose main(argv) runs it and whose docstring is its --help
SUITES = (
    "train",
    "vs_nanogpt",
    "components",
    "generate",
    "sample",
    "prepare",
    "data",
    "startup",
    "sweep_overhead",
    "pruning",
    "gpu_check",
)


def summary(name: str) -> str:
    """The first line of a suite's docstring, read without importing it (and torch with it)."""
    source = (Path(__file__).parent / f"{name}.py").read_text()
    return (ast.get_docstring(ast.parse(source)) or "").splitlines()[0]


def parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """The argument parser of suite ``name``, its module's docstring ``doc`` as its help."""
    return argparse.ArgumentParser(
        prog=f"python -m benchmarks {name}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
