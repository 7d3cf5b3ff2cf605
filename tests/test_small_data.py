"""E4: the paired test on a hand-made example, the rule's fit and the E4 frames."""

import math

import numpy as np
import pandas as pd
import pytest

from reuse.config import get_profile
from reuse.experiments import small_data as e4
from reuse.stats_tests import paired_test


def test_paired_test_matches_hand_computation():
    a, b = [3.0, 4.0, 5.0, 6.0, 7.0], [2.0, 2.0, 2.0, 2.0, 2.0]  # differences 1..5
    t = paired_test(a, b)
    # mean 3, sd sqrt(2.5), t = 3 / (sqrt(2.5) / sqrt(5)) = 4.2426 on 4 df -> p = 0.013236
    assert t["mean_diff"] == 3.0 and t["p_t"] == pytest.approx(0.013236, abs=1e-6)
    assert t["p_wilcoxon"] == pytest.approx(2 / 32)  # exact: all 5 signs positive
    assert t["cohen_dz"] == pytest.approx(3 / math.sqrt(2.5))
    assert t["rank_biserial"] == 1.0 and t["n"] == 5
    assert t["ci_low"] == pytest.approx(3 - 2.776445 * math.sqrt(2.5 / 5), abs=1e-5)
    same = paired_test([1.0, 2.0], [1.0, 2.0])
    assert same["mean_diff"] == 0 and np.isnan(same["p_t"]) and np.isnan(same["p_wilcoxon"])
    with pytest.raises(ValueError, match="one length"):
        paired_test([1.0], [1.0, 2.0])


def test_fit_rule_picks_the_better_criterion_and_handles_one_class():
    points = pd.DataFrame({"rmse": [0.1, 0.2, 0.3, 0.4], "rel_rmse": [0.1, 0.4, 0.2, 0.3],
                           "reusable": [True, True, False, False]})
    fit = e4.fit_rule(points)
    assert fit["criterion"] == "rmse" and 0.2 < fit["threshold"] < 0.3 and fit["fit_accuracy"] == 1.0
    assert e4.fit_rule(points.assign(reusable=True))["threshold"] == math.inf
    assert e4.fit_rule(points.assign(reusable=False))["threshold"] == 0.0
    assert e4.fit_rule(points.iloc[:0])["threshold"] == 0.0


def test_paired_tests_and_verdict_can_say_does_not_hold():
    rows = [{"architecture": "unet", "task": "seg", "pair": p, "seed": s, "n_T": 10, "fraction": 0.01,
             "strategy": st, "value": v + (0.02 if st == "reuse_all" else 0.01) * s}
            for p in ("a", "b") for s in range(3)
            for st, v in (("scratch", 0.5), ("reuse_all", 0.6), ("first_k", 0.5), ("rule", 0.5))]
    tests = e4.paired_tests(pd.DataFrame(rows))
    assert set(tests.comparison) == {"rule vs scratch", "rule vs reuse_all", "reuse_all vs scratch",
                                     "first_k vs scratch"}
    decisions = pd.DataFrame({"task": "seg", "n_rule_layers": [0, 2], "network_reusable": [False, True]})
    text = e4.verdict_text(tests, decisions)
    assert "does not hold at any n_T" in text and "significantly worse at 10 n_T" in text
    assert "in 1 of 2 cells" in text
    assert "not tested" in e4.verdict_text(tests, decisions.assign(n_rule_layers=0))


def test_e4_needs_two_pairs():
    with pytest.raises(ValueError, match="needs >= 2 pairs"):
        e4.run(None, get_profile("smoke"), pairs=["fashion-split"])


def test_e4_frames_are_tidy(runner_profile):
    runner, profile = runner_profile
    results, decisions = e4.run(runner, profile, ["unet"], ["autoencoder"],
                                ["fashion-split", "fashion-to-digits"], (0.25, 1.0), 0.8, min_steps=4)
    assert len(results) == 2 * 2 * len(e4.STRATEGIES) and results.value.notna().all()
    assert sorted(set(results.n_T)) == [32, 128] and len(decisions) == 4
    scratch = results[results.strategy == "scratch"].set_index(["pair", "n_T"]).value
    rule = results[results.strategy == "rule"].set_index(["pair", "n_T"]).value
    none = decisions.set_index(["pair", "n_T"]).n_rule_layers == 0
    assert np.allclose(rule[none], scratch[none])  # nothing selected: the rule is scratch
    assert (results[results.strategy == "reuse_all"].n_reused == results.n_reused.max()).all()
