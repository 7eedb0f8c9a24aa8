"""nanogpt's Hydra sweeper on Optuna's ask/tell API (:mod:`.optuna_sweeper`).

Hydra finds sweepers only in the ``hydra_plugins`` namespace package; this one ships with nanogpt.
"""
