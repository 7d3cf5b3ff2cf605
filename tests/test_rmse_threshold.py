"""E3 and the statistics behind it: threshold fitting, AUC, Spearman, leave-one-pair-out."""


import numpy as np
import pandas as pd
import pytest

from reuse import stats_tests
from reuse.experiments import layer_selection as e2
from reuse.experiments import rmse_threshold as e3
from reuse.experiments.common import Condition

PAIRS = ["fashion-split", "fashion-to-digits"]


def test_fit_threshold_recovers_a_known_separating_value():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(0.0, 0.3, 40), rng.uniform(0.5, 1.0, 60)])
    labels = np.arange(100) < 40
    threshold, acc = stats_tests.fit_threshold(x, labels)
    assert x[labels].max() < threshold < x[~labels].min() and acc == 1.0
    assert threshold == pytest.approx((x[labels].max() + x[~labels].min()) / 2)
    assert stats_tests.roc_auc(x, labels) == 1.0
    # overlapping classes: the cut still lands in the overlap and beats chance
    y = rng.uniform(0, 1, 400) < 0.5
    z = np.where(y, rng.normal(0.4, 0.1, 400), rng.normal(0.6, 0.1, 400))
    t, acc = stats_tests.fit_threshold(z, y)
    assert 0.45 < t < 0.55 and acc > 0.75
    with pytest.raises(ValueError, match="needs reusable and non-reusable"):
        stats_tests.fit_threshold([0.1, 0.2], [True, True])


def test_spearman_ci_brackets_a_monotone_relation():
    x = np.arange(30.0)
    r = stats_tests.spearman_ci(x, -x ** 2, n_boot=200)
    assert r["rho"] == pytest.approx(-1.0) and r["ci_high"] == pytest.approx(-1.0) and r["n"] == 30
    assert np.isnan(stats_tests.spearman_ci([1.0, 2.0], [2.0, 1.0])["rho"])


def _points(pairs=("a", "b", "c")) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for p in pairs:
        for i in range(30):
            reusable = i % 2 == 0
            rmse = rng.uniform(0, 0.4) if reusable else rng.uniform(0.6, 1.0)
            rows.append({"pair": p, "rmse": rmse, "rel_rmse": 2 * rmse, "reusable": reusable,
                         "reuse_score": 0.9 if reusable else 0.3})
    return pd.DataFrame(rows)


def test_leave_one_group_out_never_shows_the_held_out_group_to_fit():
    seen = []

    def fit(train):
        seen.append(set(train.pair))
        return 0.5

    out = stats_tests.leave_one_group_out(_points(), "pair", fit, lambda t, test: {"n": len(test)})
    assert list(out.pair) == ["a", "b", "c"] and (out.n == 30).all()
    assert seen == [{"b", "c"}, {"a", "c"}, {"a", "b"}]


def test_e3_leave_one_pair_out_fits_without_the_held_out_pair(monkeypatch):
    seen = []
    real = e3._fit_or_nan

    def spy(x, labels):
        seen.append(len(x))
        return real(x, labels)

    monkeypatch.setattr(e3, "_fit_or_nan", spy)
    points = _points()
    lopo = e3.leave_one_pair_out(points)
    assert seen == [60] * 6  # each fit sees the 2 other pairs' 30 points, never 90
    assert (lopo.balanced_accuracy == 1.0).all() and set(lopo.criterion) == {"rmse", "rel_rmse"}
    table = e3.threshold_table(points, n_boot=50)
    best, text = e3.better_criterion(lopo, table)
    assert best in {"rmse", "rel_rmse"} and "works better" in text
    verdict = e3.verdict_text(table, lopo, text, None)
    assert verdict.count("J3 holds") == 2


def test_e3_frames_are_tidy(runner_profile):
    runner, profile = runner_profile
    dist = e3.kernel_distances(runner, profile, ["unet"], ["autoencoder"], PAIRS)
    assert set(dist.comparison) == set(e3.COMPARISONS)
    assert (dist.rmse > 0).all() and dist.groupby("comparison").size().nunique() == 1
    swaps = e2.swap_scores(runner, profile, ["unet"], ["autoencoder"], PAIRS, (False,))
    points = e3.pooled_points(dist, swaps, 0.8)
    assert len(points) == swaps.reuse_score.notna().sum()
    assert {"rmse", "rel_rmse", "reuse_score", "reusable"} <= set(points)
    dose = e3.dose_response(runner, profile, ["unet"], ["autoencoder"], [0.0, 1.0])
    assert set(dose["shift"]) == {0.0, 1.0} and (dose.layer == "(all conv)").sum() == 2
    k = e3.kernels(runner, profile, Condition("unet", "autoencoder", "fashion-split", 0))
    first = next(iter(k.values()))
    np.testing.assert_allclose(first["difference"], first["source"] - first["target"])
    pk = e3.per_kernel(runner, profile, [Condition("unet", "autoencoder", "fashion-split", 0)])
    assert (pk.rmse >= 0).all() and pk["index"].notna().all()
