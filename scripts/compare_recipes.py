"""Compare recipes trained over several seeds in one sweep: val loss against training time.

Reads every job of a sweep folder (``nanogpt-train -m experiment=a,b seed=1,2,3 ...``): its
``config.yaml`` (which experiment, which seed), ``result.json`` (best val/loss, wall time) and
``csv/metrics.csv`` (val/loss at each validation, ``perf/train_s`` at each logged step). Prints a
table per job and per recipe, and draws ``val_loss_vs_time.png`` into the sweep folder with the
project's plotting code. Seed statistics with confidence intervals are ``nanogpt-report``'s.

    python scripts/compare_recipes.py runs/recipes/multirun_<time>_<suffix>
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections import defaultdict
from pathlib import Path

from omegaconf import OmegaConf

from nanogpt.run_dir import Result
from nanogpt.runs.jobs import is_job_folder
from nanogpt.runs.plots import plot_against_time


def val_against_time(run_dir: Path) -> list[tuple[float, float]]:
    """``(seconds of training, val/loss)`` at every validation, from the run's metrics.csv."""
    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    seconds = {int(r["step"]): float(r["perf/train_s"]) for r in rows if r.get("perf/train_s")}
    return [
        (seconds[int(r["step"])], float(r["val/loss"]))
        for r in rows
        if r.get("val/loss") and int(r["step"]) in seconds
    ]


def experiment_of(overrides: list[str], default: str) -> str:
    """The ``experiment=`` override a job ran with (a sweep may set one ``name`` for all)."""
    chosen = [o.split("=", 1)[1] for o in overrides if o.startswith("experiment=")]
    return chosen[-1] if chosen else default


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sweep_dir", type=Path)
    args = parser.parse_args()
    curves: dict[str, list] = defaultdict(list)
    results: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    print("| experiment | seed | best val/loss | wall s (whole job) |")
    print("|---|---|---|---|")
    for job in sorted((p for p in args.sweep_dir.iterdir() if is_job_folder(p)), key=lambda p: p.name):
        config = OmegaConf.load(job / "config.yaml")
        result = Result.read(job)
        if result is None or result.status != "completed":
            continue
        recipe = experiment_of(result.overrides, config.name)
        curves[recipe].append(val_against_time(job))
        results[recipe].append((config.seed, result.best_val_loss, result.wall_time_s))
        print(f"| {recipe} | {config.seed} | {result.best_val_loss:.4f} | {result.wall_time_s:.1f} |")
    print("\n| experiment | seeds | mean best val/loss | mean wall s |")
    print("|---|---|---|---|")
    for name, rows in results.items():
        losses, walls = [r[1] for r in rows], [r[2] for r in rows]
        print(f"| {name} | {len(rows)} | {statistics.mean(losses):.4f} | {statistics.mean(walls):.1f} |")
    path = plot_against_time(curves, args.sweep_dir / "val_loss_vs_time.png", title=args.sweep_dir.name)
    print(f"\n{path}")


if __name__ == "__main__":
    main()
