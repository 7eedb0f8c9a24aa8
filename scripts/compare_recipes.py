"""Compare recipes trained over several seeds in one sweep: ``nanogpt-report`` does it now.

For a sweep such as ``nanogpt-train -m experiment=a,b seed=1,2,3 ...``, ``nanogpt-report`` writes
into the sweep folder the table per job and per recipe (``report.md``: mean best val/loss with its
95% CI, the difference from a baseline recipe with Welch's 95% t-interval, mean wall time,
parameters) and ``val_loss_vs_time.png`` (val/loss against seconds of training, from each job's
``csv/metrics.csv``). This script is kept for the commands that name it, and runs that:

    python scripts/compare_recipes.py runs/recipes/multirun_<time>_<suffix> [--baseline experiment=a]
"""

from __future__ import annotations

import sys

from nanogpt.runs.report import main

if __name__ == "__main__":
    sys.exit(main(prog="compare_recipes.py"))
