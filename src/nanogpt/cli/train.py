"""The ``nanogpt-train`` console script: Hydra's command line over :func:`nanogpt.training.job.train`.

This module imports neither Lightning nor torch: ``nanogpt-train --help``, ``--cfg`` and ``--info``,
and a config that does not compose, answer in about a second. The training code (Lightning,
torch, torchmetrics: several seconds of imports) is imported when the job starts.

It is the application, and the one entry: the console script, torchrun
(``torchrun ... -m nanogpt.cli.train``) and tests that run the command all start here, and nothing
in the package imports it, so it is never loaded twice.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from nanogpt import CONFIG_DIR
from nanogpt.cli.errors import user_errors_in_one_line
from nanogpt.runs.names import register_resolvers

# The run and sweep folders' names (configs/hydra/default.yaml) resolve with these, before main runs:
# here, when the application starts, which is also when a submitit job's process imports this module
# to unpickle main.
register_resolvers()

# Groups a run can do without. Hydra deletes a group with ~group and refuses group=null.
OPTIONAL_GROUPS = ("logger", "callbacks", "scheduler", "experiment", "hparams_search", "debug")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    # the training code, once Hydra has composed a config to train with
    from nanogpt.training.job import train
    from nanogpt.training.record import interrupted_by

    try:
        with user_errors_in_one_line(log_file=f"{cfg.paths.output_dir}/train.log"):
            metrics = train(cfg)
    except (SystemExit, KeyboardInterrupt) as exit:
        # An interrupted run exits as the shell expects (130 for Ctrl-C, 143 for SIGTERM), and its
        # record has said so: no traceback. Lightning's SIGTERMException is a SystemExit without a
        # code, which would exit 0; a Ctrl-C before fit is a KeyboardInterrupt.
        signum = interrupted_by(exit)
        if signum is not None:
            sys.exit(128 + signum)
        raise
    if metrics.get("pruned_at_step") is not None:
        import optuna  # only a job of an Optuna search is pruned

        # how Optuna's sweeper learns that the trial was pruned, not failed (the record says so too)
        raise optuna.TrialPruned(f"pruned at step {metrics['pruned_at_step']}")
    # A sweeper (e.g. Optuna) minimises what the app returns.
    name = cfg.get("optimized_metric")
    return metrics.get(name) if name else None


def cli() -> None:
    """The ``nanogpt-train`` console script: :func:`main`, with ``logger=null`` meaning ``~logger``."""
    nulls = {f"{group}=null": f"~{group}" for group in OPTIONAL_GROUPS}
    sys.argv = [sys.argv[0], *(nulls.get(arg, arg) for arg in sys.argv[1:])]
    main()


if __name__ == "__main__":
    cli()
