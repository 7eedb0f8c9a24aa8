"""A sweep's fixed cost per trial, besides its training steps: a short ``nanogpt-train -m``, job by job.

A sweep of the CPU recipe, in one process, timed job by job:

    python -m benchmarks sweep_overhead                    # 12 trials of 20 steps, seed=1..12
    python -m benchmarks sweep_overhead --trials 6 --steps 50
    python -m benchmarks sweep_overhead callbacks.bleu=null   # more overrides for every trial

The sweep is ``nanogpt-train -m experiment=shakespeare_char_cpu trainer.max_steps=<steps>
scheduler.warmup_steps=0 seed=1,...,<trials>``, with Hydra's basic launcher (every job in the one
process), so that the fixed cost of a trial dominates its few steps. A Hydra callback on its command
line (:class:`benchmarks.probes.JobClock`) notes when each job starts. A trial's wall time is from its
job's start to the next job's (to the end of the sweep for the last): its run, the sweep report written
after it, and Hydra composing the next job's config. Its training steps are ``perf/train_s`` at its
last step (``csv/metrics.csv``); the rest is fixed cost. The start-up before the first job (imports,
the sweep's checks) is a row of its own.

Keep the machine otherwise quiet (and ``OMP_NUM_THREADS=1`` for a shared one): the table compares
only runs made side by side. Set NANOGPT_SHAKESPEARE_PATH=/path/to/input.txt when offline.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import logged
from benchmarks.process import Run, console_script, run
from benchmarks.suites import parser
from benchmarks.table import markdown
from nanogpt.runs.folder import Result

CLOCK_FILE = "job_clock.jsonl"


def run_sweep(log_dir: Path, trials: int, steps: int, overrides: list[str]) -> Run:
    """Run the sweep into ``log_dir``."""
    command = [
        console_script("nanogpt-train"),
        "-m",
        "experiment=shakespeare_char_cpu",
        f"trainer.max_steps={steps}",
        "scheduler.warmup_steps=0",
        f"seed={','.join(str(s) for s in range(1, trials + 1))}",
        "name=bench_sweep",
        f"paths.log_dir={log_dir}",
        "+hydra.callbacks.job_clock._target_=benchmarks.probes.JobClock",
        f"+hydra.callbacks.job_clock.path={log_dir / CLOCK_FILE}",
        *overrides,
    ]
    print("+", " ".join(["nanogpt-train", *command[1:]]), flush=True)
    return run(command, log_dir / "sweep.log").check()


def trial_rows(log_dir: Path, sweep: Run) -> list[dict[str, Any]]:
    """One row per trial (and the start-up before the first), from the clock and the job folders."""
    start, end = sweep.started, sweep.started + sweep.wall
    events = [json.loads(line) for line in (log_dir / CLOCK_FILE).read_text().splitlines()]
    starts = {e["job"]: e["t"] for e in events if e["event"] == "job_start"}
    finish = next((e["t"] for e in events if e["event"] == "multirun_end"), end)
    (sweep_dir,) = (log_dir / "bench_sweep").glob("multirun_*")
    jobs = sorted(starts)
    rows = [{"trial": "start-up", "wall": starts[jobs[0]] - start}]
    for i, job in enumerate(jobs):
        wall = (starts[jobs[i + 1]] if i + 1 < len(jobs) else finish) - starts[job]
        job_dir = sweep_dir / str(job)
        # perf/train_s at the job's last logged step: its training steps, validations before it included
        steps = logged.values(logged.metrics(job_dir), "perf/train_s")[-1]
        in_train = Result.read(job_dir).wall_time_s
        rows.append(
            {
                "trial": str(job),
                "wall": wall,
                "train": steps,
                "fixed": wall - steps,
                "in_run": in_train - steps,  # train(): set-up, validation, final validation, ...
                "between": wall - in_train,  # Hydra's job set-up, the sweep report
            }
        )
    rows.append({"trial": "after the last (final report)", "wall": end - finish})
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    keys = ["wall", "train", "fixed", "in_run", "between"]
    columns = ["trial", "wall s", "training steps s", "fixed s", "of which in train()", "of which outside"]
    cells = [(row["trial"], *(f"{row[k]:.2f}" if k in row else "" for k in keys)) for row in rows]
    print(markdown(columns, cells, right=range(1, 6)))
    trials = [r for r in rows if "fixed" in r]
    if len(trials) > 1:
        first, rest = trials[0], trials[1:]
        print()
        medians = [f"{statistics.median(r[k] for r in rest):.2f}" for k in ("fixed", "in_run", "between")]
        fixed = [
            ("first trial", f"{first['fixed']:.2f}", f"{first['in_run']:.2f}", f"{first['between']:.2f}"),
            (f"median of the other {len(rest)}", *medians),
        ]
        print(markdown(["fixed cost", "s", "in train()", "outside"], fixed, right=range(1, 4)))
    total = sum(r["wall"] for r in rows)
    print(f"\nwhole command: {total:.1f} s, of which training steps {sum(r['train'] for r in trials):.1f} s")


def main(argv: list[str] | None = None) -> None:
    cli = parser("sweep_overhead", __doc__)
    cli.add_argument("--trials", type=int, default=12, help="jobs of the sweep: seed=1..N (default 12)")
    cli.add_argument("--steps", type=int, default=20, help="trainer.max_steps of each (default 20)")
    cli.add_argument(
        "--keep", type=Path, help="write the sweep here and keep it (default: a temporary folder)"
    )
    cli.add_argument("overrides", nargs="*", help="more overrides for every trial")
    args = cli.parse_args(argv)
    log_dir = (args.keep or Path(tempfile.mkdtemp(prefix="bench_sweep_"))).resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        sweep = run_sweep(log_dir, args.trials, args.steps, args.overrides)
        print_table(trial_rows(log_dir, sweep))
    finally:
        if args.keep is None:
            shutil.rmtree(log_dir, ignore_errors=True)
