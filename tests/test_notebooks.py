import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from nanogpt.train import train

NOTEBOOK_DIR = Path(__file__).parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))

# run after the notebook's own cells, in its kernel: what the test checks, as one JSON line
PROBE = """\
import json
print(json.dumps({"run": str(RUN), "n_layer": model.config.n_layer, "top": top.indices.tolist()}))
"""


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        assert cell.get("outputs", []) == [] and cell.get("execution_count") is None


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_inspect_run_notebook_runs_on_a_fresh_run(cfg_tiny, monkeypatch):
    train(cfg_tiny)
    run = Path(cfg_tiny.paths.output_dir)
    # the kernel inherits the environment: the run to inspect, and no plot windows
    monkeypatch.setenv("NANOGPT_RUN", str(run))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK_DIR / "inspect_run.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    # the kernel's working folder is the notebook's, as in Jupyter; a failing cell raises CellExecutionError
    NotebookClient(nb, timeout=120, resources={"metadata": {"path": str(NOTEBOOK_DIR)}}).execute()

    table, probe = nb.cells[-2], nb.cells[-1]
    assert any(out.output_type == "execute_result" for out in table.outputs), "no top-5 table shown"
    stdout = "".join(out.text for out in probe.outputs if out.output_type == "stream")
    values = json.loads(stdout.strip().splitlines()[-1])
    assert Path(values["run"]) == run
    assert values["n_layer"] == 2
    assert len(values["top"]) == 5
