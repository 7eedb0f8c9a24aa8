"""Are two runs the same, bit for bit? For refactors that must not change training.

Compares every metric two run folders logged to ``csv/metrics.csv`` (step by step, as the exact
strings written) and the weights of their ``last.ckpt`` (``torch.equal``), and prints a table.
Exits 1 when anything differs. The ``perf/*`` timings are listed but not compared: two runs never
take the same time.

    # before and after a change, the same command with per-step losses:
    nanogpt-train experiment=shakespeare_char_cpu trainer.log_every_n_steps=1 hydra.run.dir=/tmp/before
    nanogpt-train experiment=shakespeare_char_cpu trainer.log_every_n_steps=1 hydra.run.dir=/tmp/after
    python scripts/compare_runs.py /tmp/before /tmp/after
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

TIMING = "timing"  # perf/* columns: compared by their steps only


def metric_columns(run: Path) -> dict[str, list[tuple[str, str]]]:
    with open(run / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    keys = [k for k in (rows[0] if rows else {}) if k not in ("step", "epoch")]
    return {k: [(r["step"], r[k]) for r in rows if r.get(k)] for k in keys}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("a", type=Path, help="a run folder")
    parser.add_argument("b", type=Path, help="another run folder")
    args = parser.parse_args()

    import torch

    from nanogpt.runs.checkpoint import read_checkpoint
    from nanogpt.runs.folder import RunDir

    a, b = metric_columns(args.a), metric_columns(args.b)
    weights = [read_checkpoint(RunDir.open(run).last)["state_dict"] for run in (args.a, args.b)]
    rows: list[tuple[str, int, int, object]] = []
    for key in sorted({*a, *b}):
        points_a, points_b = a.get(key, []), b.get(key, [])
        if key.startswith("perf/"):  # timings: logged at the same steps, never with the same values
            same_steps = [s for s, _ in points_a] == [s for s, _ in points_b]
            rows.append((key, len(points_a), len(points_b), TIMING if same_steps else False))
        else:
            rows.append((key, len(points_a), len(points_b), points_a == points_b))
    equal = weights[0].keys() == weights[1].keys() and all(
        torch.equal(weights[0][k], weights[1][k]) for k in weights[0]
    )
    rows.append(("last.ckpt weights", len(weights[0]), len(weights[1]), equal))
    print(f"| {'metric':<18} | {'points (a, b)':>13} | bitwise equal |")
    print(f"|{'-' * 20}|{'-' * 15}|---------------|")
    for key, n_a, n_b, equal in rows:
        shown = "timing" if equal is TIMING else ("yes" if equal else "NO")
        print(f"| {key:<18} | {n_a:>6} {n_b:>6} | {shown:<13} |")
    same = all(equal for *_, equal in rows)
    print("the runs are bitwise equal" if same else "the runs differ")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
