"""notebooks/03_sweep_analysis.ipynb run in a fresh clone: it runs its own sweeps, then reads them."""

import json
import math
from pathlib import Path

import pytest

from .helpers.notebooks import execute, fresh_clone, shown

# run after the notebook's own cells, in its kernel: what the test checks, as one JSON line
PROBE = """\
import json
print(json.dumps({
    "sweep": str(SWEEP),
    "statuses": [job.status for job in jobs],
    "table_rows": len(table),
    "configs": [{"params": s.params, "n": s.n, "ci95": s.ci95} for s in stats],
    "seed_table_rows": len(seed_table),
    "study": str(STUDY) if study is not None else None,
    "trials_unmatched": int(trials["job"].isna().sum()) if study is not None else None,
    "importances": importances,
}))
"""


@pytest.mark.nightly  # two sweeps, 12 jobs: 60-110 s on 2 CPU cores
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_sweep_notebook_runs_its_own_sweeps_in_a_fresh_clone(shakespeare_path, tmp_path, monkeypatch):
    optuna = pytest.importorskip("optuna")  # the [sweep] extra
    notebook = fresh_clone("03_sweep_analysis.ipynb", tmp_path, monkeypatch, shakespeare_path)
    clone = notebook.parents[1]
    monkeypatch.delenv("NANOGPT_SWEEP", raising=False)
    monkeypatch.delenv("NANOGPT_STUDY", raising=False)
    nb, values = execute(notebook, PROBE)

    # the grid: 2 learning rates x 2 depths x 2 seeds, in the clone's runs/ and data/
    sweep = Path(values["sweep"])
    assert sweep.parent == clone / "runs" / "notebook_sweep" and sweep.name.startswith("multirun_")
    assert (clone / "data" / "shakespeare_char").is_dir()
    assert values["statuses"] == ["completed"] * 8 and values["table_rows"] == 8
    results = [json.loads(path.read_text()) for path in sorted(sweep.glob("*/result.json"))]
    assert len(results) == 8 and all(r["status"] == "completed" and r["step"] == 200 for r in results)
    configs = values["configs"]
    assert {(c["params"]["optimizer.lr"], c["params"]["model.n_layer"]) for c in configs} == {
        ("0.001", "1"),
        ("0.001", "2"),
        ("0.003", "1"),
        ("0.003", "2"),
    }
    assert all(c["n"] == 2 and math.isfinite(c["ci95"]) and c["ci95"] > 0 for c in configs)
    assert values["seed_table_rows"] == 4
    assert shown(nb, "image/png") >= 2  # the grid's panels, and the study's history

    # the study, read back here from its SQLite file: each trial's value is its job's best val/loss
    study_dir = Path(values["study"])
    assert study_dir.parent == clone / "runs" / "notebook_sweep" and study_dir.name.startswith("optuna_")
    storage = f"sqlite:///{study_dir / 'optuna.db'}"
    study = optuna.load_study(study_name=study_dir.name.removeprefix("optuna_"), storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    trial_results = [json.loads(path.read_text()) for path in study_dir.glob("*/result.json")]
    assert sorted(t.value for t in study.trials) == sorted(r["best_val_loss"] for r in trial_results)
    assert values["trials_unmatched"] == 0  # the notebook found every trial's job folder
    # what each searched parameter explains of the value's variation (Optuna's default evaluator, PED-ANOVA)
    importances = values["importances"]
    assert set(importances) == set(study.trials[0].params) and sum(importances.values()) == pytest.approx(1)
