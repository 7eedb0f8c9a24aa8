"""Many runs from one command: ``nanogpt-train -m`` (a grid, or an Optuna search).

``callback`` is the Hydra callback that checks a sweep before its first job, writes its plan
(``sweep.json``) and reports after every job (through :mod:`nanogpt.runs.report`); ``launch`` says
how a multi-device job starts its ranks under a sweep; ``study`` is the Optuna side shared by the
sweeper (``src/hydra_plugins/nanogpt_sweeper``) and its jobs (storage, search space, a job's trial);
``dashboard`` serves optuna-dashboard on a search's study.

It imports from :mod:`nanogpt.runs` and the core modules, never from :mod:`nanogpt.training`.
"""
