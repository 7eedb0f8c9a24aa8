"""optuna-dashboard on an Optuna search's study, found from its sweep folder.

An Optuna search's folder (``hparams_search=...``, ``runs/<name>/optuna_<study_name>``) holds its
study; ``nanogpt-report --dashboard`` serves optuna-dashboard on it, live while the search runs:

    nanogpt-report --dashboard runs/shakespeare_char_cpu/optuna_cpu_optim --port 8080

which is ``optuna-dashboard sqlite:///runs/<name>/optuna_<study_name>/optuna.db`` without the URL to
spell (:func:`study_storage` finds the storage, a journal file or an RDB URL too).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

# an Optuna search's study, as configs/hydra/sweeper/optuna.yaml stores it in the sweep folder by default
# (storage: sqlite:///${hydra.sweep.dir}/optuna.db), or as Optuna's journal file
STUDY_FILES = {"optuna.db": "sqlite:///", "optuna.log": "journal:///"}


def study_storage(sweep_dir: str | os.PathLike) -> str:
    """The storage URL (``hydra.sweeper.storage``'s form) of the Optuna study of the sweep folder
    ``sweep_dir``: its ``optuna.db`` or ``optuna.log``, else the storage its jobs' Hydra config records
    (an RDB URL, a file elsewhere)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    sweep_dir = Path(sweep_dir)
    for name, scheme in STUDY_FILES.items():
        if (sweep_dir / name).is_file():
            return scheme + str((sweep_dir / name).resolve())
    for hydra_dir in sorted(sweep_dir.glob("*/.hydra")):
        try:  # the recorded value interpolates the job's config: ${hydra.sweep.dir} is ${paths.log_dir}/...
            cfg = OmegaConf.merge(
                OmegaConf.load(hydra_dir / "config.yaml"), OmegaConf.load(hydra_dir / "hydra.yaml")
            )
            url = OmegaConf.select(cfg, "hydra.sweeper.storage", default=None)
        except (OSError, OmegaConfBaseException):
            continue
        files = [url[len(scheme) :] for scheme in STUDY_FILES.values() if url and url.startswith(scheme)]
        if url and all(Path(f).is_file() for f in files):  # never create an empty database
            return url
    raise FileNotFoundError(
        f"{sweep_dir} holds no Optuna study (no optuna.db, no optuna.log, no job recording "
        "hydra.sweeper.storage); pass an Optuna search's folder, runs/<name>/optuna_<study_name>"
    )


def serve_dashboard(sweep_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve optuna-dashboard on the study of ``sweep_dir`` (:func:`study_storage`) until Ctrl-C."""
    url = study_storage(sweep_dir)
    try:
        import optuna
        import optuna_dashboard
    except ImportError:
        raise ImportError('--dashboard needs optuna-dashboard: pip install -e ".[sweep]"') from None
    from nanogpt.sweeps.study import open_storage

    storage = open_storage(url)
    studies = ", ".join(optuna.get_all_study_names(storage)) or "none yet"
    print(f"optuna-dashboard on {url} (studies: {studies}): open http://{host}:{port}/", flush=True)
    try:
        optuna_dashboard.run_server(storage, host=host, port=port)
    except OSError as err:
        if err.errno != errno.EADDRINUSE:
            raise
        raise OSError(
            f"port {port} on {host} is taken; pass --port with another, e.g. --port {port + 1}"
        ) from None
