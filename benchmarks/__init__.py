"""nanogpt's benchmarks: ``python -m benchmarks <suite>``, from the repository root (docs/benchmarks.md).

Each suite is one module (:data:`benchmarks.suites.SUITES`) and prints Markdown tables. What they
share has one home each: running and timing a process (:mod:`benchmarks.process`), alternating
repeats and their medians (:mod:`benchmarks.stats`), the table (:mod:`benchmarks.table`), a copy
of nanoGPT to compare with (:mod:`benchmarks.nanogpt_ref`), the texts (:mod:`benchmarks.text`),
what a run logged (:mod:`benchmarks.logged`), and the callbacks that look inside a run, given on
its command line (:mod:`benchmarks.probes`).
"""
