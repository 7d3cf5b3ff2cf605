"""Every notebook at smoke scale under nbval: papermill injects tests/smoke_parameters.yaml
and output folders (prepare only), then nbval executes the notebook in a child pytest."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import papermill as pm
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 4, NOTEBOOKS


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_at_smoke_under_nbval(notebook, tmp_path, tmp_path_factory):
    shared = tmp_path_factory.getbasetemp()  # one cache and output tree for all notebooks
    parameters = {**yaml.safe_load((REPO / "tests" / "smoke_parameters.yaml").read_text()),
                  "figures_dir": str(shared / "figures"), "results_dir": str(shared / "results"),
                  "cache_dir": str(shared / "cache")}
    prepared = tmp_path / notebook.name
    pm.execute_notebook(str(notebook), str(prepared), parameters=parameters, prepare_only=True,
                        kernel_name="python3", log_output=False, progress_bar=False)
    # a child pytest: nbval collects notebooks; no repository config applies under tmp_path
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "--nbval-lax", "--nbval-current-env",
                             "-p", "no:cacheprovider", str(prepared)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
