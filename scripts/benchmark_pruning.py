"""Pruning against no pruning: the CPU recipe's 12-trial Optuna search, run twice, one after the other.

    python scripts/benchmark_pruning.py [OVERRIDE ...]        # both searches (~1 h on 2 CPU cores)
    python scripts/benchmark_pruning.py --read runs/bench     # only the table, from finished searches

Both searches are ``hparams_search=shakespeare_char_cpu_optim`` with the same sampler seed, so their
first (random) trials draw the same values; the second adds ``hydra/sweeper/pruner=<pruner>``. The
table reads each study from its SQLite file: trials by state, the optimizer steps trained, the
search's wall time (first trial's start to last trial's end, as Optuna records them), and the best
value. Run it on a quiet machine: wall times compare only side by side.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

SEARCH = [
    "experiment=shakespeare_char_cpu",
    "hparams_search=shakespeare_char_cpu_optim",
    "callbacks.bleu=null",
    "hydra.sweeper.sampler.seed=0",
    "name=bench",
]


def run_searches(root: Path, pruner: str, overrides: list[str]) -> None:
    exe = shutil.which("nanogpt-train") or str(Path(sys.executable).with_name("nanogpt-train"))
    for study, extra in [("unpruned", []), ("pruned", [f"hydra/sweeper/pruner={pruner}", *overrides])]:
        command = [
            exe,
            "-m",
            *SEARCH,
            f"paths.root_dir={root.parent.parent}",
            f"hydra.sweeper.study_name={study}",
        ]
        print("+", " ".join([Path(exe).name, *command[1:], *extra]), flush=True)
        subprocess.run([*command, *extra], check=True, stdout=subprocess.DEVNULL)


def summarise(folder: Path, study_name: str) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{folder / 'optuna.db'}")
    trials = study.trials
    states = [t.state.name for t in trials]
    # a pruned trial trained up to its last report; a complete one to its last step
    steps = sum(max(t.intermediate_values, default=0) for t in trials)
    start = min(t.datetime_start for t in trials)
    end = max(t.datetime_complete for t in trials if t.datetime_complete)
    best = study.best_trial
    return {
        "search": study_name,
        "trials": len(trials),
        "complete": states.count("COMPLETE"),
        "pruned": states.count("PRUNED"),
        "steps": steps,
        "wall_s": (end - start).total_seconds(),
        "best": best.value,
        "best_trial": best.number,
        "params": best.params,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--read", type=Path, help="runs/<name> holding optuna_unpruned/ and optuna_pruned/")
    parser.add_argument(
        "--pruner", default="successive_halving", help="a configs/hydra/sweeper/pruner/ option"
    )
    parser.add_argument("overrides", nargs="*", help="more overrides of the pruned search's command")
    args = parser.parse_args()
    root = args.read or Path("runs") / "bench"
    if args.read is None:
        run_searches(root.resolve(), args.pruner, args.overrides)
    rows = [summarise(root / f"optuna_{name}", name) for name in ("unpruned", "pruned")]
    base = rows[0]
    print("| search | trials | complete | pruned | optimizer steps | wall s | best val/loss (trial) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['search']} | {r['trials']} | {r['complete']} | {r['pruned']} | {r['steps']:,} "
            f"({r['steps'] / base['steps']:.2f}x) | {r['wall_s']:.0f} ({r['wall_s'] / base['wall_s']:.2f}x) "
            f"| {r['best']:.4f} (#{r['best_trial']}) |"
        )
    for r in rows:
        params = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["params"].items()
        )
        print(f"best of {r['search']}: {params}")


if __name__ == "__main__":
    main()
