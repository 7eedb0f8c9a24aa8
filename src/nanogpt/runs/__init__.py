"""The run folder, and what reads finished runs. Neither Lightning nor Hydra is needed here.

``folder`` is the layout of one run folder and its typed ``result.json`` (who may write into it, which
checkpoint ``ckpt_path`` means); ``names`` names run folders, one name for every rank of a run;
``checkpoint`` reads a checkpoint back into a model. Over many runs: ``jobs`` reads each job folder
of a sweep, ``plan`` its ``sweep.json`` (what the sweep set out to run, so a report names what never
ran), ``stats`` groups jobs over seeds (mean and confidence interval, no I/O), ``render`` writes the
report's text, ``plots`` draws the PNGs, and ``report`` (``nanogpt-report``) puts them together.

Training writes these files (:mod:`nanogpt.training`); sweeps report through ``report``
(:mod:`nanogpt.sweeps`). Nothing here imports either.
"""
