"""Everything that runs inside Lightning's training loop, and the job that starts it.

``job`` is the whole training job, ``train(cfg)``: claim the run folder, derive the run's ``spec``
(:class:`~nanogpt.training.spec.RunSpec`: the typed result of the composed config and the run's
facts, built once), record it (``record``: ``config.yaml`` and ``result.json`` while the run lives),
build the trainer, the ``module`` and the data, fit, then the final ``validation``. ``compiler``
decides ``compile: auto``. ``callbacks`` are what Lightning calls during the loop (progress,
checkpoints, loss curves, metrics, pruning), ``loggers`` where its metrics go.

It imports from every wing below it (:mod:`nanogpt.runs`, :mod:`nanogpt.sweeps`, the model and the
data) and from no command line (:mod:`nanogpt.cli`).
"""
