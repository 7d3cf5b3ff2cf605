"""Every notebook with a grid (01-05) runs at smoke with a single architecture, task, pair and seed: a sample of
that matrix in which each dimension is narrowed to one value and each architecture, task
and pair appears (nbval runs the full smoke grid)."""
from __future__ import annotations

import json

import pytest
from conftest import reuse_run, trained_log

from reuse.study.registry import experiment
from reuse.study.training.data import parse_pair, target_pair

SINGLES = {
    "unet-segmentation-digits-seed0": ("0", "unet", "segmentation", "fashion-to-digits"),
    "pspnet-autoencoder-split-seed1": ("1", "pspnet", "autoencoder", "fashion-split"),
    "unet-segmentation-random-labels-seed1": ("1", "unet", "segmentation", "fashion-random-labels"),
}
NOTEBOOKS = tuple(experiment(id).prefix for id in ("e1", "e2", "e3", "e4", "e5"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("matrix_cache")


@pytest.mark.parametrize("name", SINGLES)
def test_every_notebook_runs_with_one_value_per_dimension(name, cache, tmp_path):
    seed, arch, task, pair = SINGLES[name]
    only = [arg for nb in NOTEBOOKS for arg in ("--only", nb)]  # 06 has no grid to narrow
    before = len(trained_log(cache))
    result = reuse_run("--profile", "smoke", "--device", "cpu", "--seeds", seed, *only,
                       "--set", f"architectures=[{arch}]", "--set", f"tasks=[{task}]",
                       "--set", f"pairs=[{pair}]", cache=cache, output=tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    for notebook in NOTEBOOKS:
        recorded = json.loads((tmp_path / "results" / f"{notebook}.json").read_text())
        assert recorded["params"]["seeds"] == [int(seed)]
        assert recorded["verdicts"], f"{notebook} recorded no verdicts"
    # nothing outside the narrowed grid was trained (notebook 05 once ran E4's whole ladder,
    # notebook 03 its dose series on a pair of its own)
    allowed = {parse_pair(p)[0] for p in (pair, target_pair(pair))}
    trained = {parse_pair(line["run"].split("/")[2])[0] for line in trained_log(cache)[before:]}
    assert trained <= allowed, f"trained outside the grid: {sorted(trained - allowed)}"
