"""reuse.study.registry against the files that exist: the notebooks, the modules and the
names each notebook records its results under."""
from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest

from reuse.study import plots
from reuse.study.registry import ADEQUACY, EXPERIMENTS, experiment

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ENTRIES = (*EXPERIMENTS, ADEQUACY)


def _code(notebook: str) -> str:
    cells = json.loads((NOTEBOOKS / notebook).read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def test_every_notebook_has_exactly_one_experiment():
    assert sorted(e.notebook for e in EXPERIMENTS) == sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert [e.id for e in EXPERIMENTS] == [f"e{i}" for i in range(1, len(EXPERIMENTS) + 1)]
    assert [e.notebook for e in EXPERIMENTS] == sorted(e.notebook for e in EXPERIMENTS)  # in notebook order


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.id)
def test_modules_import_and_the_notebook_uses_them(entry):
    importlib.import_module(entry.module)
    importlib.import_module(entry.plots)
    code = _code(entry.notebook)
    assert f"from reuse.study.experiments import {entry.module.rsplit('.', 1)[1]}" in code
    assert entry.plots.rsplit(".", 1)[1] in plots.__all__


def test_each_prefix_is_its_notebooks_stem_and_adequacys_its_number():
    for entry in EXPERIMENTS:
        assert entry.prefix == Path(entry.notebook).stem
    assert ADEQUACY.notebook == experiment("e1").notebook and ADEQUACY.prefix == ADEQUACY.notebook[:2]


@pytest.mark.parametrize("entry", EXPERIMENTS, ids=lambda e: e.id)
def test_each_notebook_writes_its_results_under_its_prefix(entry):
    code = _code(entry.notebook)
    assert f'report.record("{entry.prefix}"' in code
    written = re.findall(r'with_name\("([^"]+)"\)', code)
    assert written, f"{entry.notebook} writes no table"
    prefixes = (entry.prefix, ADEQUACY.prefix) if entry.notebook == ADEQUACY.notebook else (entry.prefix,)
    assert all(name.startswith(tuple(f"{p}_" for p in prefixes)) for name in written), written


def test_plots_modules_are_the_experiments():
    drawn = {e.plots.rsplit(".", 1)[1] for e in ENTRIES}
    assert drawn == set(plots.__all__) - {"common", "save_figure"}


def test_an_unknown_id_names_the_allowed_ones():
    assert experiment("e4").module == "reuse.study.experiments.small_data"
    with pytest.raises(ValueError, match="allowed: e1, e2.*adequacy"):
        experiment("e8")
