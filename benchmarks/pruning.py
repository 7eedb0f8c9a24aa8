"""Pruning against no pruning: the CPU recipe's 12-trial Optuna search, run twice, one after the other.

    python -m benchmarks pruning [OVERRIDE ...]        # both searches (~1 h on 2 CPU cores)
    python -m benchmarks pruning --read runs/bench     # only the table, from finished searches

Both searches are ``hparams_search=shakespeare_char_cpu_optim`` with the same sampler seed, so their
first (random) trials draw the same values; the second adds ``hydra/sweeper/pruner=<pruner>``. The
table reads each study from its SQLite file: trials by state, the optimizer steps trained, the
search's wall time (first trial's start to last trial's end, as Optuna records them), and the best
value. Run it on a quiet machine: wall times compare only side by side.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.process import console_script, run
from benchmarks.suites import parser
from benchmarks.table import markdown

SEARCH = [
    "experiment=shakespeare_char_cpu",
    "hparams_search=shakespeare_char_cpu_optim",
    "callbacks.bleu=null",
    "hydra.sweeper.sampler.seed=0",
    "name=bench",
]
STUDIES = ("unpruned", "pruned")


def run_searches(root: Path, pruner: str, overrides: list[str]) -> None:
    for study, extra in zip(STUDIES, [[], [f"hydra/sweeper/pruner={pruner}", *overrides]], strict=True):
        command = ["-m", *SEARCH, f"paths.root_dir={root.parent.parent}", f"hydra.sweeper.study_name={study}"]
        print("+ nanogpt-train", " ".join([*command, *extra]), flush=True)
        root.mkdir(parents=True, exist_ok=True)
        run([console_script("nanogpt-train"), *command, *extra], root / f"{study}.log").check()


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


def main(argv: list[str] | None = None) -> None:
    cli = parser("pruning", __doc__)
    cli.add_argument("--read", type=Path, help="runs/<name> holding optuna_unpruned/ and optuna_pruned/")
    cli.add_argument("--pruner", default="successive_halving", help="a configs/hydra/sweeper/pruner/ option")
    cli.add_argument("overrides", nargs="*", help="more overrides of the pruned search's command")
    args = cli.parse_args(argv)
    root = args.read or Path("runs") / "bench"
    if args.read is None:
        run_searches(root.resolve(), args.pruner, args.overrides)
    rows = [summarise(root / f"optuna_{name}", name) for name in STUDIES]
    base = rows[0]
    cells = [
        (
            r["search"],
            r["trials"],
            r["complete"],
            r["pruned"],
            f"{r['steps']:,} ({r['steps'] / base['steps']:.2f}x)",
            f"{r['wall_s']:.0f} ({r['wall_s'] / base['wall_s']:.2f}x)",
            f"{r['best']:.4f} (#{r['best_trial']})",
        )
        for r in rows
    ]
    columns = ["search", "trials", "complete", "pruned", "optimizer steps", "wall s", "best val/loss (trial)"]
    print(markdown(columns, cells))
    for r in rows:
        params = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["params"].items()
        )
        print(f"best of {r['search']}: {params}")
