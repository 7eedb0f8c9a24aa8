"""What a run leaves behind, and what reads it.

``record`` writes ``<run>/result.json`` (status, metrics, loss history) while a run trains;
``curves`` keeps the loss history and draws ``<run>/loss.png``; ``plots`` draws the PNGs;
``sweep`` is the Hydra callback that checks a multirun and reports on it after every job, and
``plan`` the sweep's plan that it writes, ``<sweep>/sweep.json`` (what the sweep set out to run);
``report`` (``nanogpt-report``) turns a sweep folder's records into a table, a CSV and a plot: ``jobs``
reads each job folder's ``result.json``, ``stats`` groups the jobs over seeds (mean and confidence
interval, no I/O) and ``render`` turns them into the report's text.

Run folders are named by their start time and a random suffix (the ``run_name`` resolver of
``configs/hydra/default.yaml``, :mod:`nanogpt.runs.names`): two runs started in the same second, on
one machine or on two sharing the disk, never share a folder, and the ranks of one run started by
torchrun or SLURM share theirs.
"""

import secrets

from omegaconf import OmegaConf

from nanogpt.runs.names import run_name

# Cached like Hydra's own ${now:}: every job of a sweep, which Hydra composes from the first
# config's resolver cache, sees the same suffix, so they share one sweep folder.
OmegaConf.register_new_resolver("run_suffix", lambda: secrets.token_hex(3), use_cache=True, replace=True)
# the whole name of a run folder, agreed by every rank of a torchrun or SLURM launch
OmegaConf.register_new_resolver("run_name", run_name, use_cache=True, replace=True)
