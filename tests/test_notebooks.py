import json
from pathlib import Path

import pytest

from nanogpt.train import train

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        assert cell.get("outputs", []) == [] and cell.get("execution_count") is None


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_inspect_run_notebook_runs_on_a_fresh_run(cfg_tiny, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    train(cfg_tiny)
    run = Path(cfg_tiny.paths.output_dir)
    nb = json.loads((Path(__file__).parents[1] / "notebooks" / "inspect_run.ipynb").read_text())
    namespace: dict = {}
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            source = "".join(cell["source"])
            if source.lstrip().startswith("from pathlib"):
                source = source.replace("RUN = max(", f"RUN = Path({str(run)!r}) or max(")
            exec(compile(source, "inspect_run.ipynb", "exec"), namespace)
    assert namespace["RUN"] == run
    assert namespace["model"].config.n_layer == 2
    assert len(namespace["top"].indices) == 5
