"""Start-up: how long nanogpt-train takes before it does anything, and which imports cost.

Each command runs ``--repeats`` times in a fresh process, the commands alternating, and the table
gives the median and the minimum wall time of each (on a busy machine the minimum is the steadier
number). ``debug=fdr`` (one training and one validation batch of the CPU recipe) is timed to its
first training step (the run summary that train.log records just before it) and to its end.
Then ``python -X importtime -c "import nanogpt.training.job"`` gives the packages that cost the most.

    NANOGPT_SHAKESPEARE_PATH=/path/to/input.txt python -m benchmarks startup --repeats 5
    python -m benchmarks startup --repeats 5 --no-fdr   # imports only, no data needed
"""

from __future__ import annotations

import re
import statistics
import sys
import tempfile
from collections.abc import Collection
from datetime import datetime
from pathlib import Path

from benchmarks.process import run
from benchmarks.stats import alternate
from benchmarks.suites import parser
from benchmarks.table import markdown
from nanogpt.runs.folder import RunDir

PY = sys.executable
# what each row runs, in a fresh process; nanogpt-train is `python -m nanogpt.cli.train`, the
# console script's module, so that the code measured is this checkout's, whatever is installed
COMMANDS = {
    "`python -c pass` (the interpreter)": [PY, "-c", "pass"],
    "`--help` of `nanogpt-train`": [PY, "-m", "nanogpt.cli.train", "--help"],
    "`import torch`": [PY, "-c", "import torch"],
    "`import lightning`": [PY, "-c", "import lightning"],
    "`import nanogpt.training.job` (the training code)": [PY, "-c", "import nanogpt.training.job"],
}
FDR = "`nanogpt-train experiment=shakespeare_char_cpu debug=fdr`"
# train.log's first line is the run summary, logged when training starts: "[2026-01-02 10:11:12,345][...]"
LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")
# the modules whose import the last table breaks down (each one's first import, with what it pulls
# in): Lightning imports torch._dynamo and torchmetrics, whose functional package imports
# transformers (for BERTScore) and scipy.signal (for its audio metrics) whenever they are installed
PACKAGES = (
    "lightning",
    "torch",
    "torch._dynamo",
    "torchmetrics.functional",
    "transformers",
    "scipy.signal",
    "sympy",
    "matplotlib",
    "hydra",
    "sacrebleu",
)


def fdr_times(root: Path) -> tuple[float, float]:
    """Seconds from the start of a ``debug=fdr`` run to its first training step, and to its exit."""
    out = Path(tempfile.mkdtemp(dir=root))
    command = [PY, "-m", "nanogpt.cli.train", "experiment=shakespeare_char_cpu", "debug=fdr"]
    done = run([*command, f"hydra.run.dir={out}", f"paths.log_dir={root}"]).check()
    first = LOG_TIME.match(RunDir.at(out).log_file.read_text())
    if first is None:
        raise SystemExit(f"no timestamp at the start of {RunDir.at(out).log_file}")
    summary = datetime.strptime(first.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return summary - done.started, done.wall


def import_costs(module: str, packages: Collection[str]) -> dict[str, float]:
    """Seconds the first import of each of ``packages`` takes under ``import module`` (cumulative,
    what it pulls in included; a module first imported inside another counts in both)."""
    done = run([PY, "-X", "importtime", "-c", f"import {module}"]).check()
    costs = {}
    for _, line in done.lines:  # "import time: self [us] | cumulative | imported package"
        parts = line.split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2].strip()
        if name in packages and name not in costs:
            costs[name] = int(parts[1]) / 1e6
    return costs


def main(argv: list[str] | None = None) -> None:
    cli = parser("startup", __doc__)
    cli.add_argument("--repeats", type=int, default=5, help="fresh processes per command")
    cli.add_argument("--no-fdr", action="store_true", help="leave out the debug=fdr run (needs the data)")
    args = cli.parse_args(argv)

    with tempfile.TemporaryDirectory() as root:

        def measure(name: str, r: int) -> float | tuple[float, float]:
            return fdr_times(Path(root)) if name == FDR else run(COMMANDS[name]).check().wall

        def show(seconds: float | tuple[float, float]) -> str:
            return f"{seconds if isinstance(seconds, float) else seconds[1]:.1f}s"

        measured = alternate([*COMMANDS, *([] if args.no_fdr else [FDR])], args.repeats, measure, show=show)
    times: dict[str, list[float]] = {name: measured[name] for name in COMMANDS}
    if not args.no_fdr:
        times[f"{FDR}, to its first training step"] = [first for first, _ in measured[FDR]]
        times[f"{FDR}, whole command"] = [total for _, total in measured[FDR]]

    columns = [f"command (fresh process, {args.repeats} repeats)", "median s", "min s"]
    print(markdown(columns, [(n, f"{statistics.median(s):.2f}", f"{min(s):.2f}") for n, s in times.items()]))

    costs = import_costs("nanogpt.training.job", PACKAGES)
    print()
    columns = [
        "module, under `python -X importtime -c 'import nanogpt.training.job'`",
        "s, with what it imports",
    ]
    ranked = sorted(costs.items(), key=lambda item: -item[1])
    print(markdown(columns, [(f"`{name}`", f"{seconds:.2f}") for name, seconds in ranked]))
