"""The console scripts: each turns a command line into one call of a job, and a user's mistake into
one line (``errors``).

``train`` (``nanogpt-train``, Hydra over :func:`nanogpt.training.job.train`; also the torchrun entry,
``-m nanogpt.cli.train``), ``sample`` (``nanogpt-sample``), ``evaluate`` (``nanogpt-eval``),
``export`` (``nanogpt-export``), ``report`` (``nanogpt-report``); ``guard`` is the Hydra callback that
checks ``nanogpt-train``'s run folder before Hydra writes into it. Nothing else imports this package.
"""
