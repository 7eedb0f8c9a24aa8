"""The ``nanogpt-report`` console script: a sweep folder's report (:mod:`nanogpt.runs.report`), or
optuna-dashboard on an Optuna search's study (:mod:`nanogpt.sweeps.dashboard`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from nanogpt.runs.render import TIME_PLOT
from nanogpt.runs.report import write_report


def main(argv: Sequence[str] | None = None, prog: str = "nanogpt-report") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Tabulate and plot the jobs of a nanogpt-train -m sweep folder; "
        "writes report.md, report.csv, val_loss.png (and, when seeds repeat, seeds.csv and "
        "val_loss_vs_time.png) into it. With --dashboard, serve optuna-dashboard on an Optuna search's "
        "study instead.",
    )
    parser.add_argument("sweep_dir", type=Path, help="e.g. runs/shakespeare_char_cpu/multirun_<time>")
    parser.add_argument(
        "--baseline",
        metavar="KEY=VALUE",
        help="when seeds repeat, the configuration every other is compared with (the difference of "
        "its mean best val/loss, with Welch's 95%% t-interval), e.g. ablation=gpt2: one value of an "
        "override the sweep varies; in a grid over several overrides each configuration is compared "
        "with the one that has KEY=VALUE and its own other values. Default: the first value listed "
        "of the first override the sweep varies (seed aside), the first job's; report.md names it",
    )
    parser.add_argument(
        "--add",
        metavar="SWEEP_DIR",
        nargs="+",
        default=[],
        type=Path,
        help="more sweep folders of the same study, e.g. the seeds a second command or machine ran: "
        "their jobs join this report (named <folder>/<job>), which is written into sweep_dir only",
    )
    parser.add_argument(
        "--dashboard",
        action="store_true",
        help="serve optuna-dashboard on the Optuna study of sweep_dir (an hparams_search folder, "
        "runs/<name>/optuna_<study_name>: its optuna.db, optuna.log, or the storage its jobs record) "
        "until Ctrl-C, instead of writing the report; the same as "
        "optuna-dashboard sqlite:///runs/<name>/optuna_<study_name>/optuna.db. Needs the [sweep] extra",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="--dashboard: the address to serve on (default %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=8080, help="--dashboard: the port to serve on (default %(default)s)"
    )
    args = parser.parse_args(argv)
    if args.dashboard:
        # optuna-dashboard (and Optuna's storage) only when asked for
        from nanogpt.sweeps.dashboard import serve_dashboard

        try:
            serve_dashboard(args.sweep_dir, args.host, args.port)
        except (FileNotFoundError, ImportError, OSError) as err:
            parser.exit(2, f"{prog}: {err}\n")
        return 0
    try:
        path = write_report(args.sweep_dir, args.baseline, args.add)
    except (FileNotFoundError, ValueError) as err:
        parser.exit(2, f"{prog}: {err}\n")
    sys.stdout.write(path.read_text())
    written = [path, path.with_name("report.csv"), path.with_name("val_loss.png")]
    written += [p for p in (path.with_name("seeds.csv"), path.with_name(TIME_PLOT)) if p.is_file()]
    print(f"\nwritten: {', '.join(map(str, written))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
