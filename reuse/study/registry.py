"""The study's experiments, one entry each: its id, notebook, code and where its results go.

An experiment is computed by one module of :mod:`reuse.study.experiments`, drawn by one of
:mod:`reuse.study.plots`, and run, interpreted and recorded by one notebook of
``notebooks/``, which writes its results as ``results/PROFILE/PREFIX.json`` (and ``.md``)
and its tables as ``PREFIX_*.csv``. :data:`EXPERIMENTS` lists E1-E7, one per notebook, in
the notebooks' order; :data:`ADEQUACY` is the training-adequacy check that notebook 01 runs
before E1, whose tables go under the notebook's number alone (``01_*.csv``). Module paths
are strings, so reading the registry imports nothing (``tests/test_registry.py`` checks
that each one imports and that each notebook records under its prefix).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Experiment:
    """One experiment of the study.

    ``id``: its short name (``"e1"``); ``notebook``: its file in ``notebooks/``;
    ``module`` and ``plots``: the modules that compute and draw it; ``prefix``: the file
    name stem of its results (the notebook's stem for E1-E7)."""

    id: str
    notebook: str
    module: str
    plots: str
    prefix: str


def _experiment(id: str, stem: str, name: str) -> Experiment:
    """E1-E7: notebook ``stem.ipynb``, results under ``stem``, code in modules ``name``."""
    return Experiment(id, f"{stem}.ipynb", f"reuse.study.experiments.{name}", f"reuse.study.plots.{name}",
                      stem)


EXPERIMENTS = (
    _experiment("e1", "01_network_reusability", "network_reusability"),
    _experiment("e2", "02_layer_selection", "layer_selection"),
    _experiment("e3", "03_rmse_threshold", "rmse_threshold"),
    _experiment("e4", "04_small_data_transfer", "small_data"),
    _experiment("e5", "05_criteria_comparison", "criteria_comparison"),
    _experiment("e6", "06_your_own_model", "own_model"),
    _experiment("e7", "07_pretrained_network", "pretrained_network"),
)
# notebook 01's adequacy tables (01_training_adequacy.csv, 01_learning_curves.csv,
# 01_source_adequacy.csv), drawn by E1's plots module
ADEQUACY = Experiment("adequacy", "01_network_reusability.ipynb", "reuse.study.experiments.adequacy",
                      "reuse.study.plots.network_reusability", "01")


def experiment(id: str) -> Experiment:
    """The entry of ``id`` (``"e1"`` ... ``"e7"``, ``"adequacy"``); ValueError names the ids."""
    for entry in (*EXPERIMENTS, ADEQUACY):
        if entry.id == id:
            return entry
    raise ValueError(f"no experiment {id!r}; allowed: {', '.join(e.id for e in (*EXPERIMENTS, ADEQUACY))}")
