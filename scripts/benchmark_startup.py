"""Benchmark start-up: how long nanogpt-train takes before it does anything, and which imports cost.

Each command runs ``--repeats`` times in a fresh process, the commands alternating, and the table
gives the median and the minimum wall time of each (on a busy machine the minimum is the steadier
number). ``debug=fdr`` (one training and one validation batch of the CPU recipe) is timed to its
first training step (the run summary that train.log records just before it) and to its end.
Then ``python -X importtime -c "import nanogpt.training.job"`` gives the packages that cost the most.

    NANOGPT_SHAKESPEARE_PATH=/path/to/input.txt python scripts/benchmark_startup.py --repeats 5
    python scripts/benchmark_startup.py --repeats 5 --no-fdr   # imports only, no data needed
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

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


def wall_time(command: list[str]) -> float:
    """Seconds ``command`` takes, from start to exit; it must succeed."""
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def fdr_times(root: Path) -> tuple[float, float]:
    """Seconds from the start of a ``debug=fdr`` run to its first training step, and to its exit."""
    out = Path(tempfile.mkdtemp(dir=root))
    command = [PY, "-m", "nanogpt.cli.train", "experiment=shakespeare_char_cpu", "debug=fdr"]
    command += [f"hydra.run.dir={out}", f"paths.log_dir={root}"]
    started = time.time()
    end = started + wall_time(command)
    first = LOG_TIME.match((out / "train.log").read_text())
    if first is None:
        raise SystemExit(f"no timestamp at the start of {out / 'train.log'}")
    summary = datetime.strptime(first.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return summary - started, end - started


def import_costs(module: str) -> dict[str, float]:
    """Seconds the first import of each of PACKAGES takes under ``import module`` (cumulative,
    what it pulls in included; a module first imported inside another counts in both)."""
    done = subprocess.run([PY, "-X", "importtime", "-c", f"import {module}"], capture_output=True, text=True)
    costs = {}
    for line in done.stderr.splitlines():  # "import time: self [us] | cumulative | imported package"
        parts = line.split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2].strip()
        if name in PACKAGES and name not in costs:
            costs[name] = int(parts[1]) / 1e6
    return costs


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per command")
    parser.add_argument("--no-fdr", action="store_true", help="leave out the debug=fdr run (needs the data)")
    args = parser.parse_args()

    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    fdr_first: list[float] = []
    fdr_total: list[float] = []
    with tempfile.TemporaryDirectory() as root:
        for repeat in range(args.repeats):
            for name, command in COMMANDS.items():
                times[name].append(wall_time(command))
            if not args.no_fdr:
                first, total = fdr_times(Path(root))
                fdr_first.append(first)
                fdr_total.append(total)
            print(f"repeat {repeat + 1}/{args.repeats} done", file=sys.stderr)
    if fdr_first:
        times[f"{FDR}, to its first training step"] = fdr_first
        times[f"{FDR}, whole command"] = fdr_total

    print(f"| command (fresh process, {args.repeats} repeats) | median s | min s |")
    print("|---|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {statistics.median(seconds):.2f} | {min(seconds):.2f} |")

    costs = import_costs("nanogpt.training.job")
    print(
        "\n| module, under `python -X importtime -c 'import nanogpt.training.job'` "
        "| s, with what it imports |"
    )
    print("|---|---|")
    for name, seconds in sorted(costs.items(), key=lambda item: -item[1]):
        print(f"| `{name}` | {seconds:.2f} |")


if __name__ == "__main__":
    main()
