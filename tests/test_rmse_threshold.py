"""E3 and the statistics behind it: threshold fitting, AUC, Spearman, the frames."""

import numpy as np
import pandas as pd
import pytest

from reuse.study.config import Grid
from reuse.study.experiments import layer_selection as e2
from reuse.study.experiments import rmse_threshold as e3
from reuse.study.experiments.common import Condition
from reuse.toolkit import stats

GRID = Grid(("unet",), ("segmentation",), ("fashion-split", "fashion-to-digits"))


def test_fit_threshold_recovers_a_known_separating_value():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(0.0, 0.3, 40), rng.uniform(0.5, 1.0, 60)])
    labels = np.arange(100) < 40
    threshold, acc = stats.fit_threshold(x, labels)
    assert x[labels].max() < threshold < x[~labels].min() and acc == 1.0
    assert threshold == pytest.approx((x[labels].max() + x[~labels].min()) / 2)
    assert stats.roc_auc(x, labels) == 1.0
    # overlapping classes: the cut still lands in the overlap and beats chance
    y = rng.uniform(0, 1, 400) < 0.5
    z = np.where(y, rng.normal(0.4, 0.1, 400), rng.normal(0.6, 0.1, 400))
    t, acc = stats.fit_threshold(z, y)
    assert 0.45 < t < 0.55 and acc > 0.75
    with pytest.raises(ValueError, match="needs reusable and non-reusable"):
        stats.fit_threshold([0.1, 0.2], [True, True])


def test_held_out_accuracy_never_fits_on_the_held_out_pair(monkeypatch):
    seen = []
    real = e3._fit_or_nan

    def spy(x, labels):
        seen.append(len(x))
        return real(x, labels)
    monkeypatch.setattr(e3, "_fit_or_nan", spy)
    rng = np.random.default_rng(1)
    points = pd.DataFrame([{"pair": p, "seed": 0, "rmse": rng.uniform(0, 0.4) if i % 2 else rng.uniform(0.6, 1),
                            "reusable": bool(i % 2)} for p in "abc" for i in range(30)])
    assert e3._held_out_accuracy(points, "rmse") == 1.0
    assert seen == [60, 60, 60]  # each fit sees the 2 other pairs' 30 points, never 90


def test_noise_floor_and_points(runner_profile):
    runner, profile = runner_profile
    dist = e3.kernel_distances(runner, profile, GRID)
    assert set(dist.comparison) == set(e3.COMPARISONS) and (dist.rmse > 0).all()
    assert set(dist[dist.comparison == "order"].seed) == set(profile.seeds[:profile.order_twins])
    floor = e3.noise_floor(dist)
    assert (floor.n_twins == profile.order_twins).all() and (floor.floor_rmse > 0).all()
    swaps, cells = e2.swap_scores(runner, profile, GRID, reestimate=(True,))
    points = e3.points(dist, swaps, cells.assign(usable=True))
    assert set(points.donor) == {"source", "twin", "different_init"}
    lookup = floor.set_index(["architecture", "task", "pair", "layer"]).floor_rmse
    expected = [r.rmse / lookup[(r.architecture, r.task, r.pair, r.layer)] for r in points.itertuples()]
    assert np.allclose(points.floor_ratio, expected)
    table = e3.criterion_table(points)
    assert list(table.criterion) == list(e3.KERNEL_DISTANCES)
    assert set(e3.lopo_table(points).pair) == set(GRID.pairs)


def test_dose_and_kernels(runner_profile):
    runner, profile = runner_profile
    rungs = ("fashion-shifted@0.25", "fashion-shifted@0.5")
    dose = e3.dose_response(runner, profile, Grid(("unet",), ("autoencoder",), rungs))
    whole = dose[dose.layer == "(all conv)"]
    # the twin once per seed at s = 0 (every rung shares the target), then each rung at its dose
    assert sorted(zip(whole.pair, whole["shift"])) == sorted(
        [("twin", 0.0)] * len(profile.seeds) + [(r, float(r.split("@")[1])) for r in rungs for _ in profile.seeds])
    assert len(e3.dose_table(dose)) == 2
    with pytest.raises(ValueError, match="fashion-split"):
        e3.dose_response(runner, profile, Grid(("unet",), ("autoencoder",), ("fashion-split",)))
    assert e3.dose_table(e3.dose_response(runner, profile, Grid(("unet",), ("autoencoder",), ()))).empty
    k = e3.kernels(runner, profile, Condition("unet", "autoencoder", "fashion-split", 0))
    first = next(iter(k.values()))
    np.testing.assert_allclose(first["difference"], first["source"] - first["target"])
    pk = e3.per_kernel(runner, profile, [Condition("unet", "autoencoder", "fashion-split", 0)])
    assert (pk.rmse >= 0).all() and pk["index"].notna().all()


def _blind_points(seeds=range(6), layers=12, pairs=("a", "b", "c")) -> pd.DataFrame:
    """Points where the layer's size alone separates the classes (large = reusable, so the
    baseline must find its direction) and the RMSE is a noisy criterion (held-out balanced
    accuracy about 0.75: reusable U(0, 1), not reusable U(0.5, 1.5)); the twin's RMSE is tiny
    and the different-init control's large, so the controls pass."""
    rng = np.random.default_rng(0)
    rows = []
    for pair in pairs:
        for seed in seeds:
            for i in range(layers):
                reusable = i % 2 == 0
                size = rng.uniform(1000, 2000) if reusable else rng.uniform(10, 900)
                base = {"architecture": "unet", "task": "segmentation", "pair": pair, "seed": seed,
                        "layer": f"l{i}", "depth": rng.random(), "log_size": np.log(size),
                        "reusable": reusable, "reuse_score": 0.9 if reusable else 0.1}
                rows += [{**base, "donor": "source", "rmse": rng.uniform(0, 1) + (0 if reusable else 0.5)},
                         {**base, "donor": "twin", "rmse": 0.01},
                         {**base, "donor": "different_init", "rmse": 5.0}]
    return pd.DataFrame(rows)


def test_a_criterion_that_a_weight_blind_baseline_beats_is_not_useful():
    points = _blind_points()
    row = e3.criterion_table(points, criteria=("rmse",)).iloc[0]
    assert row.controls == "passed"
    assert row.acc_verdict == "holds" and 0.65 < row.held_out_accuracy < 0.85  # the old rule: holds
    assert row.best_baseline == "log_size" and row.baseline_accuracy == 1.0
    assert row.minus_baseline_verdict == "refuted" and row.minus_baseline_ci_high < 0
    assert row.verdict == "refuted"
    baselines = e3.baseline_table(points).set_index("criterion")
    assert baselines.loc["log_size", "reusable_when"] == "large"
    assert baselines.loc["log_size", "held_out_accuracy"] == 1.0 == baselines.loc["log_size", "auc"]
    records = e3.records(pd.DataFrame([row]), None).set_index("judgment")
    assert records.loc["J3 rmse", "verdict"] == "refuted"
    assert row.minus_baseline < 0 and records.loc["J3 rmse", "p"] < 0.05  # refuted by the baseline part


def test_a_baseline_chooses_its_direction_on_the_training_pairs_only(monkeypatch):
    points = _blind_points(seeds=[0]).query("donor == 'source'")
    seen = []
    real = e3._fit_oriented

    def spy(x, labels):
        seen.append(set(points.loc[x.index, "pair"]))
        return real(x, labels)
    monkeypatch.setattr(e3, "_fit_oriented", spy)
    assert e3._held_out_accuracy(points, "log_size", oriented=True) == 1.0  # large = reusable, found
    assert seen == [{"b", "c"}, {"a", "c"}, {"a", "b"}]  # never the held-out pair
    assert e3._held_out_accuracy(points, "log_size") == 0.5  # small = reusable: no cut beats chance
    lopo = e3.lopo_table(points, criteria=("rmse",))
    assert set(lopo[lopo.criterion == "log_size"].reusable_when) == {"large"}


def test_label_check_counts_the_labels_the_reset_earns_too():
    key = {"architecture": "unet", "task": "segmentation", "pair": "p", "seed": 0}
    pts = pd.DataFrame([{**key, "donor": "source", "layer": l, "reusable": r} for l, r in
                        (("a", True), ("b", True), ("c", False))])
    swaps = pd.DataFrame([{**key, "donor": "theta_0", "layer": l, "bn_reestimated": True, "reuse_score": v}
                          for l, v in (("a", 0.9), ("b", 0.1), ("c", 0.95))])
    check = e3.label_check(pts, swaps)
    assert check == {"source_points": 3, "reusable": 2, "reusable_when_reset_too": 1}
    assert "1 of those (50%)" in e3.label_text(check) and "untrained kernel" not in e3.label_text(check)
