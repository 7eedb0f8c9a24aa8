"""What a run leaves behind, and what reads it.

``record`` writes ``<run>/result.json`` (status, metrics, loss history) while a run trains;
``curves`` keeps the loss history and draws ``<run>/loss.png``; ``plots`` draws the PNGs;
``sweep`` is the Hydra callback that checks a multirun and reports on it after every job;
``report`` (``nanogpt-report``) turns a sweep folder's records into a table, a CSV and a plot.
"""

RESULT_FILE = "result.json"  # in every run folder; written by record, read by report
