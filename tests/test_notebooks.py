import json
import math
from pathlib import Path

import pytest

from .helpers.notebooks import NOTEBOOK_DIR, execute, fresh_clone, printed, shown

NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))

# run after the notebook's own cells, in its kernel: what the test checks, as one JSON line
PROBE = """\
import json
print(json.dumps({
    "run": str(RUN),
    "n_layer": model.config.n_layer,
    "top": top.indices.tolist(),
    "tokens_per_step": tokens_per_step,
    "validations": len(val_loss),
    "samples_over_time": over_time["step"].tolist() if not isinstance(over_time, str) else over_time,
}))
"""


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        assert cell.get("outputs", []) == [] and cell.get("execution_count") is None


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_inspect_run_notebook_reads_a_run_it_is_given(trained_run, monkeypatch):
    run = trained_run.path
    # the kernel inherits the environment: the run to inspect, and Jupyter's own inline plots
    monkeypatch.setenv("NANOGPT_RUN", str(run))
    monkeypatch.delenv("MPLBACKEND", raising=False)
    nb, values = execute(NOTEBOOK_DIR / "02_inspect_run.ipynb", PROBE)
    assert Path(values["run"]) == run and values["n_layer"] == 2
    assert len(values["top"]) == 5
    cfg = trained_run.cfg
    assert values["tokens_per_step"] == cfg.data.batch_size * cfg.model.block_size
    assert values["validations"] == 4  # at steps 10, 20, 30 and 40
    assert values["samples_over_time"] == [10, 30]  # one prompt's continuation at each BLEU validation
    assert shown(nb, "image/png") >= 1  # loss against steps and against tokens
    assert all(f"--- temperature {t}" in printed(nb) for t in (0.5, 0.8, 1.2))


@pytest.mark.nightly  # 300 steps of the CPU recipe: the other test of this notebook reads a given run
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_inspect_run_notebook_trains_its_own_run_in_a_fresh_clone(shakespeare_path, tmp_path, monkeypatch):
    notebook = fresh_clone("02_inspect_run.ipynb", tmp_path, monkeypatch, shakespeare_path)
    clone = notebook.parents[1]
    monkeypatch.delenv("NANOGPT_RUN", raising=False)
    nb, values = execute(notebook, PROBE)
    run = Path(values["run"])
    assert run.parent == clone / "runs" / "notebook_inspect"
    assert json.loads((run / "result.json").read_text())["step"] == 300
    assert (clone / "data" / "shakespeare_char").is_dir()
    assert values["n_layer"] == 4 and values["validations"] == 3
    assert values["tokens_per_step"] == 12 * 64  # the CPU recipe's batch x context
    assert values["samples_over_time"] == [100, 200, 300]
    assert shown(nb, "image/png") >= 1


@pytest.mark.nightly  # 400 steps of the CPU recipe: about a minute
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_quickstart_notebook_trains_samples_and_scores_in_a_fresh_clone(
    shakespeare_path, tmp_path, monkeypatch
):
    notebook = fresh_clone("01_quickstart.ipynb", tmp_path, monkeypatch, shakespeare_path)
    clone = notebook.parents[1]
    columns = {"val": "val/loss", "ppl": "val/ppl", "bleu": "val/bleu", "chrf": "val/chrf"}
    probe = ", ".join(f"'{k}': val['{c}'].tolist()" for k, c in columns.items())
    probe = f"print(json.dumps({{'run': str(RUN), 'best': final['best_val_loss'], {probe}}}))"
    nb, values = execute(notebook, probe)
    run = Path(values["run"])
    assert run.parent == clone / "runs" / "notebook_quickstart"
    assert json.loads((run / "result.json").read_text())["step"] == 400
    assert len(values["val"]) == 4  # steps 100, 200, 300, 400
    assert values["val"][-1] < values["val"][0] < 4.2  # it learned; ln(65) = 4.17 is a uniform guess
    assert values["best"] == pytest.approx(min(values["val"]), abs=1e-6)
    assert values["ppl"] == pytest.approx([math.exp(v) for v in values["val"]], rel=1e-3)
    assert all(0 <= b <= 100 for b in values["bleu"]) and all(0 <= c <= 100 for c in values["chrf"])
    assert shown(nb, "image/png") >= 1  # the loss curves
    text = printed(nb)
    assert "--- temperature 0.6\nROMEO:" in text and "--- temperature 1.0\nROMEO:" in text
    assert "train:" in text  # the progress bar
