"""What each trial of a sweep costs besides its training steps: a short ``nanogpt-train -m`` sweep
of the CPU recipe, in one process, timed job by job.

    python scripts/benchmark_sweep_overhead.py                    # 12 trials of 20 steps, seed=1..12
    python scripts/benchmark_sweep_overhead.py --trials 6 --steps 50
    python scripts/benchmark_sweep_overhead.py callbacks.bleu=null   # more overrides for every trial

The sweep is ``nanogpt-train -m experiment=shakespeare_char_cpu trainer.max_steps=<steps>
scheduler.warmup_steps=0 seed=1,...,<trials>``, with Hydra's basic launcher (every job in the one
process), so that the fixed cost of a trial dominates its few steps. A Hydra callback added for the
benchmark (:class:`JobClock`) notes when each job starts. A trial's wall time is from its job's start
to the next job's (to the end of the sweep for the last): its run, the sweep report written after
it, and Hydra composing the next job's config. Its training steps are ``perf/train_s`` at its last
step (``csv/metrics.csv``); the rest is fixed cost. The start-up before the first job (imports, the
sweep's checks) is a row of its own.

Keep the machine otherwise quiet (and ``OMP_NUM_THREADS=1`` for a shared one): the table compares
only runs made side by side. Set NANOGPT_SHAKESPEARE_PATH=/path/to/input.txt when offline.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

CLOCK_FILE = "job_clock.jsonl"


class JobClock(Callback):
    """A Hydra callback that appends ``{"event", "job", "t"}`` lines to ``path`` (wall-clock seconds)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def _note(self, event: str, job: int | None) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"event": event, "job": job, "t": time.time()}) + "\n")

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        self._note("job_start", int(config.hydra.job.num))

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        self._note("multirun_end", None)


def run_sweep(log_dir: Path, trials: int, steps: int, overrides: list[str]) -> tuple[float, float]:
    """Run the sweep into ``log_dir``; return the process's start and end times."""
    exe = shutil.which("nanogpt-train") or str(Path(sys.executable).with_name("nanogpt-train"))
    command = [
        exe,
        "-m",
        "experiment=shakespeare_char_cpu",
        f"trainer.max_steps={steps}",
        "scheduler.warmup_steps=0",
        f"seed={','.join(str(s) for s in range(1, trials + 1))}",
        "name=bench_sweep",
        f"paths.log_dir={log_dir}",
        f"+hydra.callbacks.job_clock._target_={Path(__file__).stem}.JobClock",
        f"+hydra.callbacks.job_clock.path={log_dir / CLOCK_FILE}",
        *overrides,
    ]
    env = dict(os.environ)
    # the child imports JobClock from this file
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), env.get("PYTHONPATH")]))
    print("+", " ".join([Path(exe).name, *command[1:]]), flush=True)
    start = time.time()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
    return start, time.time()


def train_seconds(job_dir: Path) -> float:
    """``perf/train_s`` at the job's last logged step: its training steps, validations before it included."""
    with (job_dir / "csv" / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("perf/train_s")]
    return float(rows[-1]["perf/train_s"])


def trial_rows(log_dir: Path, start: float, end: float) -> list[dict[str, Any]]:
    """One row per trial (and the start-up before the first), from the clock and the job folders."""
    events = [json.loads(line) for line in (log_dir / CLOCK_FILE).read_text().splitlines()]
    starts = {e["job"]: e["t"] for e in events if e["event"] == "job_start"}
    finish = next((e["t"] for e in events if e["event"] == "multirun_end"), end)
    (sweep_dir,) = (log_dir / "bench_sweep").glob("multirun_*")
    jobs = sorted(starts)
    rows = [{"trial": "start-up", "wall": starts[jobs[0]] - start}]
    for i, job in enumerate(jobs):
        wall = (starts[jobs[i + 1]] if i + 1 < len(jobs) else finish) - starts[job]
        result = json.loads((sweep_dir / str(job) / "result.json").read_text())
        steps = train_seconds(sweep_dir / str(job))
        rows.append(
            {
                "trial": str(job),
                "wall": wall,
                "train": steps,
                "fixed": wall - steps,
                "in_run": result["wall_time_s"] - steps,  # train(): set-up, validation, final validation, ...
                "between": wall - result["wall_time_s"],  # Hydra's job set-up, the sweep report
            }
        )
    rows.append({"trial": "after the last (final report)", "wall": end - finish})
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    def cell(row: dict[str, Any], key: str) -> str:
        return f"{row[key]:.2f}" if key in row else ""

    keys = ["wall", "train", "fixed", "in_run", "between"]
    print("| trial | wall s | training steps s | fixed s | of which in train() | of which outside |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['trial']} | " + " | ".join(cell(row, k) for k in keys) + " |")
    trials = [r for r in rows if "fixed" in r]
    if len(trials) > 1:
        first, rest = trials[0], trials[1:]
        print()
        print("| fixed cost | s | in train() | outside |")
        print("|---|---:|---:|---:|")
        print(f"| first trial | {first['fixed']:.2f} | {first['in_run']:.2f} | {first['between']:.2f} |")
        print(
            f"| median of the other {len(rest)} | {statistics.median(r['fixed'] for r in rest):.2f} "
            f"| {statistics.median(r['in_run'] for r in rest):.2f} "
            f"| {statistics.median(r['between'] for r in rest):.2f} |"
        )
    total = sum(r["wall"] for r in rows)
    print(f"\nwhole command: {total:.1f} s, of which training steps {sum(r['train'] for r in trials):.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=12, help="jobs of the sweep: seed=1..N (default 12)")
    parser.add_argument("--steps", type=int, default=20, help="trainer.max_steps of each (default 20)")
    parser.add_argument(
        "--keep", type=Path, help="write the sweep here and keep it (default: a temporary folder)"
    )
    parser.add_argument("overrides", nargs="*", help="more overrides for every trial")
    args = parser.parse_args()
    log_dir = args.keep or Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    log_dir = log_dir.resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        start, end = run_sweep(log_dir, args.trials, args.steps, args.overrides)
        print_table(trial_rows(log_dir, start, end))
    finally:
        if args.keep is None:
            shutil.rmtree(log_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
