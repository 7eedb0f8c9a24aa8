"""An Optuna study as nanogpt's sweeps use it: its storage, its search space, and its trials' pruning.

The sweeper (``hydra_plugins.nanogpt_sweeper``) asks the study for trials and launches a job for
each; a job finds its own trial here (:func:`job_trial`) and reports ``val/loss`` to it at every
validation (:class:`nanogpt.training.callbacks.prune.PruneTrial`, the Lightning side, kept apart so that the
sweeper, which Hydra imports at every start, imports no Lightning). Both sides open the study from
the same ``hydra.sweeper`` config, so a job launched in another process, or on another machine
(submitit), reaches the same study.

Storage (``hydra.sweeper.storage``, :func:`open_storage`):

- ``sqlite:///path/optuna.db``: the default, a file in the sweep folder;
- ``journal:///path/optuna.log``: Optuna's journal file, an append-only log that jobs on several
  machines can share over a network filesystem (NFS), where SQLite's locking cannot be trusted;
- any other SQLAlchemy URL (``postgresql://user:password@host/db``): Optuna's RDB storage;
- ``null``: in memory, for one command's life; jobs find it only in this process (the basic launcher).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

# how the sweeper tells a job its trial: an environment variable that Hydra sets for the job alone
# (hydra.job.env_set), so it reaches a job run in this process, a spawned rank, or a submitit job
TRIAL_ENV = "NANOGPT_OPTUNA_TRIAL_ID"
JOURNAL = "journal:///"
# studies in memory (storage: null), by name, for the jobs this process runs
_IN_MEMORY: dict[str, optuna.Study] = {}


def open_storage(url: str | None) -> optuna.storages.BaseStorage | str | None:
    """Optuna's storage for ``hydra.sweeper.storage``; see the module docstring for the forms."""
    import optuna

    if url is None:
        return None
    url = str(url)
    if url.startswith(JOURNAL):
        path = Path(url[len(JOURNAL) :])
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    return url


def open_study(
    study_name: str,
    storage: str | None,
    directions: Sequence[str],
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    """Create the study, or load it when its storage holds it already (a resumed sweep)."""
    import optuna

    if storage is None:
        study = _IN_MEMORY.get(study_name)
        if study is None:
            study = optuna.create_study(
                study_name=study_name, directions=list(directions), sampler=sampler, pruner=pruner
            )
            _IN_MEMORY[study_name] = study
        return study
    return optuna.create_study(
        study_name=study_name,
        storage=open_storage(storage),
        directions=list(directions),
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )


def distribution(override: Override) -> optuna.distributions.BaseDistribution | str:
    """The Optuna distribution of one sweep override, or its value as a string when it is fixed.

    - ``choice(a, b, ...)``: categorical;
    - ``range(start, stop[, step])``: integers (or floats) from ``start`` below ``stop``, as Hydra's
      grid reads a range (``range(1, 4)`` is 1, 2, 3);
    - ``interval(low, high)``: uniform floats in [low, high]; ``tag(log, interval(...))`` log-uniform;
      ``tag(int, interval(...))`` integers.
    """
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    value = override.value()
    if override.is_choice_sweep() or (isinstance(value, RangeSweep) and value.shuffle):
        assert isinstance(value, (ChoiceSweep, RangeSweep))
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if isinstance(value, RangeSweep):
        values = list(override.sweep_iterator())
        if not values:
            raise ValueError(f"{override.input_line} is an empty range: its start must be below its stop")
        if all(isinstance(v, int) for v in values):
            return IntDistribution(values[0], values[-1], step=int(value.step))
        return FloatDistribution(float(values[0]), float(values[-1]), step=float(value.step))
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        if "int" in value.tags:
            return IntDistribution(int(value.start), int(value.end), log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise ValueError(
        f"{override.input_line}: an Optuna search takes choice(...), range(...), interval(...) or "
        "tag(log, interval(...)); glob(...) lists config options for a grid (hydra/sweeper=basic)"
    )


def search_space(
    overrides: Sequence[Override],
) -> tuple[dict[str, optuna.distributions.BaseDistribution], dict[str, str]]:
    """Split a sweep's overrides (``hydra.sweeper.params``, then the command line, which wins) into
    the searched parameters' distributions and the fixed overrides every trial takes."""
    searched: dict[str, Any] = {}
    fixed: dict[str, str] = {}
    for override in overrides:
        key = override.get_key_element()
        found = distribution(override)
        searched.pop(key, None)
        fixed.pop(key, None)
        (fixed if isinstance(found, str) else searched)[key] = found
    return searched, fixed


def job_trial() -> optuna.Trial | None:
    """The trial this job runs for, when an Optuna sweeper launched it; else ``None``.

    The study is opened as the sweeper's config describes it (``hydra.sweeper``), with its pruner,
    which decides :meth:`optuna.Trial.should_prune` here, in the job.
    """
    trial_id = os.environ.get(TRIAL_ENV)
    if not trial_id:
        return None
    import optuna
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    sweeper = HydraConfig.get().sweeper
    pruner = instantiate(sweeper.pruner) if sweeper.get("pruner") else optuna.pruners.NopPruner()
    storage = sweeper.get("storage")
    if storage is None:
        study = _IN_MEMORY.get(sweeper.study_name)
        if study is None:
            log.warning("the study is in memory in another process (hydra.sweeper.storage=null): no pruning")
            return None
    else:
        study = optuna.load_study(study_name=sweeper.study_name, storage=open_storage(storage), pruner=pruner)
    study.pruner = pruner
    return optuna.Trial(study, int(trial_id))


# the user attribute of a pruned trial: the step at which its job's PruneTrial stopped it
PRUNED_AT = "pruned_at_step"


def pruned_at(study: optuna.Study, number: int) -> int | None:
    """The step at which trial ``number`` was pruned, read back from its study; ``None`` if it was not."""
    for frozen in study.get_trials(deepcopy=False):
        if frozen.number == number:
            return frozen.user_attrs.get(PRUNED_AT)
    return None
