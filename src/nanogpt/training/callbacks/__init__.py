"""The Lightning callbacks of a training run, as ``configs/callbacks/default.yaml`` lists them.

``console`` (progress in optimizer steps, the run summary), ``loop`` (validate the last step, stop on
a NaN loss), ``checkpoints`` (atomic ``best.ckpt``/``last.ckpt``, RNG state), ``curves`` (the loss
history and ``loss.png``), ``bleu`` (``val/bleu``, ``val/chrf``), ``grad_norm``, ``throughput``
(``perf/*``), and ``prune`` (an Optuna trial's pruning, added by the job when it is one).
"""
