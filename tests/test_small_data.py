"""E4: the paired test, the rule's fit, its no-peeking guarantee and the frames."""

import math

import numpy as np
import pandas as pd
import pytest

from reuse.study import claims
from reuse.study.config import Grid
from reuse.study.experiments import small_data as e4
from reuse.toolkit.stats import paired_test

GRID = Grid(("unet",), ("segmentation",), ("fashion-split", "fashion-scrambled"))


def test_paired_test_matches_hand_computation():
    a, b = [3.0, 4.0, 5.0, 6.0, 7.0], [2.0, 2.0, 2.0, 2.0, 2.0]  # differences 1..5
    t = paired_test(a, b)
    # mean 3, sd sqrt(2.5), t = 3 / (sqrt(2.5) / sqrt(5)) = 4.2426 on 4 df -> p = 0.013236
    assert t["mean_diff"] == 3.0 and t["p_t"] == pytest.approx(0.013236, abs=1e-6)
    assert t["p_wilcoxon"] == pytest.approx(2 / 32)  # exact: all 5 signs positive
    assert t["cohen_dz"] == pytest.approx(3 / math.sqrt(2.5))
    assert t["rank_biserial"] == 1.0 and t["n"] == 5
    with pytest.raises(ValueError, match="one length"):
        paired_test([1.0], [1.0, 2.0])


def test_fit_rule_picks_the_better_criterion_and_handles_one_class():
    points = pd.DataFrame({"donor": "source", "rmse": [0.1, 0.2, 0.3, 0.4], "rel_rmse": [0.1, 0.4, 0.2, 0.3],
                           "reusable": [True, True, False, False]})
    fit = e4.fit_rule(points)
    assert fit["criterion"] == "rmse" and 0.2 < fit["threshold"] < 0.3 and fit["fit_accuracy"] == 1.0
    assert e4.fit_rule(points.assign(reusable=True))["threshold"] == math.inf
    assert e4.fit_rule(points.assign(reusable=False))["threshold"] == 0.0
    assert e4.fit_rule(points.iloc[:0])["threshold"] == 0.0
    assert e4.fit_rule(points.assign(donor="twin"))["threshold"] == 0.0  # controls never fit


def test_e4_findings_say_when_one_pair_leaves_the_rule_nothing_to_learn_from():
    decisions = pd.DataFrame({"pair": ["fashion-split"] * 2, "strict_a": False, "n_rule": 0})
    heads = pd.DataFrame({"claim": ["H1"], "statement": [e4.HEADLINE["H1"]], "n_T": [24], "verdict": ["undecided"],
                          "estimate": [np.nan], "ci_low": [np.nan], "ci_high": [np.nan], "cells": [0]})
    heads["task"], heads["n"], heads["detectable"] = "segmentation", 0, np.nan
    family = claims.adjust(e4.records(heads, heads.iloc[:0], heads.iloc[:0], heads.iloc[:0]).assign(notebook="04"))
    text = e4.findings(heads, heads.iloc[:0], decisions, family)
    assert "Only one rung ran" in text and "did not run" in text
    assert text.startswith("- **Headline.**") and "undecided at n_T = 24" in text and "no cell where both hold" in text


def test_e4_findings_state_the_primary_claims_after_holm():
    """A headline that holds raw but not after Holm over the family is quoted as undecided,
    with its raw verdict and adjusted p beside it; one that survives is quoted as holds."""
    heads = pd.DataFrame({"claim": ["H1", "H1", "H2"], "statement": [e4.HEADLINE["H1"]] * 2 + [e4.HEADLINE["H2"]],
                          "task": "segmentation", "n_T": [12, 60, 12], "verdict": "holds",
                          "estimate": [0.04, 0.05, 0.03], "ci_low": [0.005, 0.04, 0.004],
                          "ci_high": [0.075, 0.06, 0.056], "detectable": 0.02, "n": 5, "cells": 10})
    none = heads.iloc[:0]
    family = claims.adjust(e4.records(heads, none, none, none).assign(notebook="04"))
    decisions = pd.DataFrame({"pair": ["a", "b"], "strict_a": [True, False], "n_rule": [1, 0]})
    text = e4.findings(heads, none, decisions, family)
    headline = text.splitlines()[0]
    assert "undecided at n_T = 12 (+0.04 [+0.005, +0.075], holds before the correction, Holm-adjusted p" in headline
    assert "holds at n_T = 60 (+0.05 [+0.04, +0.06], Holm-adjusted p" in headline
    assert headline.endswith("after Holm's correction over the 3 primary claims recorded at this profile "
                             "(by notebook 04).")
    assert "- H2 at n_T = 12" in text and ": undecided (+0.03" in text
    # the smallest detectable effect at both levels, and power judged at Holm's
    holm = family.set_index("judgment").detectable_holm
    assert f"detectable 0.02 raw, {holm.iloc[0]:.2g} at Holm's level" in headline
    powered = e4.findings(heads.assign(reuse_all_benefit=1.0), none, decisions, family)
    assert "at Holm's level: powered there against half the reuse-all benefit 0.5" in powered


def test_e4_frames_and_no_peeking(runner_profile, monkeypatch):
    runner, profile = runner_profile
    seen = []
    real = e4.fit_rule

    def spy(points):
        seen.append(set(points.pair))
        return real(points)
    monkeypatch.setattr(e4, "fit_rule", spy)
    results, decisions = e4.run(runner, profile, GRID, fractions=(0.25, 1.0))
    # each pair's threshold is fitted on the other pairs' points only (conditions run in
    # grid order, one fit per held-out pair)
    assert len(seen) == 2 and "fashion-split" not in seen[0] and "fashion-scrambled" not in seen[1]
    n_t = sorted(set(results.n_T))
    assert len(n_t) == 2 and len(decisions) == 2 * 2 * len(profile.seeds)
    assert results.value.notna().all() and set(results.strategy) >= {"scratch", "reuse_all", "rule",
                                                                      "rmse_only", "oracle"}
    wide = results[results.strategy.isin(["scratch", "rule"])].pivot_table(
        index=["pair", "seed", "n_T"], columns="strategy", values="value")
    none = decisions.set_index(["pair", "seed", "n_T"]).n_rule == 0
    assert np.allclose(wide.rule[none], wide.scratch[none])  # nothing selected: the rule is scratch
    assert (results[results.strategy == "reuse_all"].n_reused == decisions.n_layers.max()).all()
    assert (decisions.n_rule[~decisions.strict_a] == 0).all()  # (a) fails: the strict rule reuses nothing
    tests = e4.comparisons(results)
    assert {"reuse_all - scratch", "rmse_only - scratch"} <= set(tests.comparison)
    assert len(e4.control_table(decisions)) == 2 * 2
    heads = e4.headline(results, decisions)
    assert set(heads.claim) >= {"H1", "H2", "H3a"} and len(e4.design_check(results, decisions)) == 2


def _cells(gains: dict, strict: dict, n_rule: int = 2, n_layers: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Results and decisions of one task x fraction: per pair and seed, scratch 0.5 and the
    other strategies 0.5 + that pair's gain (the rule only where (a) holds)."""
    results, decisions = [], []
    for pair, gain in gains.items():
        for seed in range(5):
            g = gain + 0.01 * (seed % 2)
            cell = {"task": "segmentation", "fraction": 0.1, "architecture": "pspnet", "pair": pair,
                    "seed": seed, "n_T": 60}
            values = {"scratch": 0.5, "reuse_all": 0.5 + g / 2, "rmse_only": 0.5 + g,
                      "rule": 0.5 + g if strict[pair] else 0.5, "random": 0.5}
            results += [{**cell, "strategy": k, "value": v, "full_value": 0.8} for k, v in values.items()]
            decisions.append({**cell, "strict_a": strict[pair], "n_rule": n_rule if strict[pair] else 0,
                              "n_rmse_only": n_rule, "n_layers": n_layers})
    return pd.DataFrame(results), pd.DataFrame(decisions)


def test_headline_claims_come_out_all_ways():
    """H1 on the cells where both conditions hold, H2 as the interaction with (a), H3 where
    the rule differs; a claim with no cell to judge is undecided, never refuted."""
    near_far = _cells({"near": 0.05, "far": -0.04}, {"near": True, "far": False})
    heads = e4.headline(*near_far).set_index("claim")
    assert heads.verdict.to_dict() == {"H1": "holds", "H2": "holds", "H3a": "holds", "H3b": "holds"}
    assert heads.cells["H1"] == 5 and heads.cells["H3a"] == 10
    harmful = _cells({"near": -0.05, "far": 0.04}, {"near": True, "far": False})
    heads = e4.headline(*harmful).set_index("claim")
    assert heads.verdict["H1"] == "refuted" and heads.verdict["H2"] == "refuted"
    never = _cells({"near": 0.05, "far": 0.05}, {"near": False, "far": False})
    heads = e4.headline(*never).set_index("claim")
    assert heads.verdict["H1"] == "undecided" and heads.cells["H1"] == 0 and heads.verdict["H2"] == "undecided"
    design = e4.design_check(*near_far)
    assert design.verdict.tolist() == ["holds"]  # the full-data target is far above scratch
