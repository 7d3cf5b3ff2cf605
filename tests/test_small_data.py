"""E4: condition (b) per layer, the factorial's claims, the earlier rule, power and the frames."""

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from reuse.study import claims
from reuse.study.config import Grid
from reuse.study.experiments import small_data as e4
from reuse.toolkit.stats import paired_test
from reuse.toolkit.verdicts import detectable

GRID = Grid(("unet",), ("segmentation",), ("fashion-split", "fashion-scrambled"))
SEEDS = range(5)


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


# ----------------------------------------------------------------------------- condition (b)
def _ladder():
    """A synthetic ladder whose answer is known: six conv layers that training moves by
    scales 400x apart (as real layers differ), a target reference R = theta_0 + s u, its
    batch-order twin (movement correlated 0.9 with R's) and three sources whose movement is
    correlated 0.95 or 0 with R's, layer by layer, in a different pattern on each rung."""
    gen = torch.Generator().manual_seed(0)
    scales = [0.01, 0.02, 0.04, 1.0, 2.0, 4.0]
    pattern = {"near-early": [1, 1, 1, 0, 0, 0], "near-late": [0, 0, 0, 1, 1, 1], "alternate": [1, 0, 1, 0, 1, 0]}
    theta0, ref, floor, sources = {}, {}, {}, {p: {} for p in pattern}
    for i, s in enumerate(scales):
        basis, _ = torch.linalg.qr(torch.randn(64, 3, generator=gen, dtype=torch.float64))
        u, v, w = (8.0 * basis[:, j] for j in range(3))  # orthogonal, unit root mean square
        key, shape = f"l{i}.weight", (4, 4, 2, 2)
        theta0[key] = torch.randn(64, generator=gen, dtype=torch.float64)
        ref[key] = (theta0[key] + s * u).reshape(shape).float()
        floor[key] = (theta0[key] + s * (0.9 * u + math.sqrt(1 - 0.81) * v)).reshape(shape).float()
        for p, close in pattern.items():
            c = 0.95 if close[i] else 0.0
            sources[p][key] = (theta0[key] + s * (c * u + math.sqrt(1 - c * c) * w)).reshape(shape).float()
    expected = {p: {f"l{i}" for i, close in enumerate(flags) if close} for p, flags in pattern.items()}
    return ref, floor, sources, expected


def _b(sources, ref, floor, column="floor_ratio"):
    layers = [f"l{i}" for i in range(6)]
    frame = pd.concat([e4.criterion_rows(state, ref, floor, layers).assign(
        architecture="unet", task="segmentation", regime="siblings", fraction=0.1, seed=0, donor="source", pair=p)
        for p, state in sources.items()], ignore_index=True)
    split = e4.split_b(frame.assign(floor_ratio=frame[column]))
    return {p: set(g.layer[g.b]) for p, g in split.groupby("pair")}


def test_condition_b_follows_the_source_on_a_ladder_built_to_vary_it():
    """(b) over the layer's own floor picks, on each rung, exactly the layers whose source
    moved like the target, a different set per rung; the relative RMSE, set by how far each
    layer moves, picks the same layers on every rung, which is what this test exists to catch."""
    ref, floor, sources, expected = _ladder()
    picks = _b(sources, ref, floor)
    assert picks == expected
    assert len({frozenset(p) for p in picks.values()}) == 3  # a different choice on every rung
    by_size = _b(sources, ref, floor, column="rel_rmse")
    assert len({frozenset(p) for p in by_size.values()}) == 1  # the layer-bound criterion cannot vary


def test_split_b_sets_its_threshold_from_the_sources_only():
    frame = pd.DataFrame({"architecture": "unet", "task": "segmentation", "regime": "siblings", "fraction": 0.1,
                          "seed": 0, "pair": "p", "layer": list("abcd") * 2,
                          "donor": ["source"] * 4 + ["twin"] * 4, "floor_ratio": [1.0, 2.0, 3.0, 4.0] + [0.1] * 4})
    out = e4.split_b(frame)
    assert (out.b_threshold == 2.5).all()  # the twin's small ratios never lower it
    assert out.b.tolist() == [True, True, False, False, True, True, True, True]


def test_groups_draw_k_from_each_pool_or_leave_the_group_out():
    layers = [f"l{i}" for i in range(6)]
    got = e4.groups(layers, [True, True, True, True, False, False], 3, np.random.default_rng(0))
    assert set(got) == {"pass", "random_k", "reuse_all"}  # two failing layers: no fail group of 3
    assert len(got["pass"]) == 3 and set(got["pass"]) <= set(layers[:4]) and got["reuse_all"] == layers
    assert got["pass"] == sorted(got["pass"], key=layers.index)  # forward order


# ----------------------------------------------------------------------------- the factorial
def _factorial(gains: dict, held: dict):
    """Results and (b) layers of one task x fraction: per rung and seed, scratch 0.5 and each
    strategy 0.5 + its gain (plus a little seed noise)."""
    results, layers = [], []
    for pair, g in gains.items():
        for seed in SEEDS:
            cell = {"task": "segmentation", "fraction": 0.1, "architecture": "pspnet", "pair": pair,
                    "seed": seed, "n_T": 60}
            noise = 0.004 * (seed % 2)
            for strategy, gain in (("scratch", 0.0), *g.items()):
                results.append({**cell, "regime": "siblings", "strategy": strategy, "draw": 0,
                                "value": 0.5 + gain + (noise if strategy != "scratch" else 0), "full_value": 0.8})
            layers.append({**cell, "regime": "siblings", "donor": "source", "layer": "l0", "a": held[pair]})
    return pd.DataFrame(results), pd.DataFrame(layers)


PAPER_LIKE = {"near": {"pass": 0.05, "fail": 0.01, "reuse_all": 0.02, "random_k": 0.02},
              "far": {"pass": 0.0, "fail": 0.0, "reuse_all": -0.01, "random_k": 0.0}}
HELD = {"near": True, "far": False}


def test_factorial_claims_come_out_all_ways():
    """H1 on the (a)+(b) cell, H2 as the interaction, H3 against reuse-all and random groups
    where (a) holds; a claim with no cell is undecided with n = 0, never refuted."""
    heads = e4.headline(*_factorial(PAPER_LIKE, HELD)).set_index("claim")
    assert heads.verdict.to_dict() == {"H1": "holds", "H2": "holds", "H3a": "holds", "H3b": "holds"}
    assert heads.estimate["H2"] == pytest.approx(0.04)  # the seed noise cancels in the contrast and (heads.n == 5).all()
    assert heads.cells["H1"] == 5 and heads.regime.unique().tolist() == ["siblings"]
    reversed_ = {"near": {"pass": 0.0, "fail": 0.05, "reuse_all": 0.05, "random_k": 0.05},
                 "far": {"pass": 0.02, "fail": 0.0, "reuse_all": 0.0, "random_k": 0.0}}
    heads = e4.headline(*_factorial(reversed_, HELD)).set_index("claim")
    assert heads.verdict["H2"] == "refuted" and heads.verdict["H3a"] == "refuted"
    never = e4.headline(*_factorial(PAPER_LIKE, {"near": False, "far": False})).set_index("claim")
    assert never.verdict["H1"] == "undecided" and never.n["H1"] == 0 and never.verdict["H2"] == "undecided"


def test_a_regime_takes_what_it_did_not_run_from_the_siblings():
    results, layers = _factorial(PAPER_LIKE, HELD)
    own = results[results.strategy.isin(["pass", "fail"])].assign(regime="fine-tuned")
    own["value"] = own.value + 0.1  # the fine-tuned regime's groups gain more
    both = pd.concat([results, own], ignore_index=True)
    heads = e4.headline(both, pd.concat([layers, layers.assign(regime="fine-tuned")])).set_index(["regime", "claim"])
    assert heads.estimate["fine-tuned", "H1"] == pytest.approx(heads.estimate["siblings", "H1"] + 0.1)
    # scratch and reuse-all are the siblings' runs: H3a moves by the groups' shift alone
    assert heads.estimate["fine-tuned", "H3a"] == pytest.approx(heads.estimate["siblings", "H3a"] + 0.1)


def test_power_is_computed_at_the_holm_level():
    se, n, m = 0.01, 5, 20
    half = stats.t.ppf(0.975, n - 1) * se
    heads = pd.DataFrame({"estimate": [0.05], "ci_low": [0.05 - half], "ci_high": [0.05 + half], "n": [n],
                          "detectable": [detectable(se, n - 1)], "reuse_all_benefit": [0.1], "regime": "siblings"})
    out = e4.power(heads, m).iloc[0]
    assert out.detectable_holm == pytest.approx(detectable(se, n - 1, 1 - 0.05 / m))
    assert out.detectable_holm > 2 * out.detectable  # 5 seeds at alpha / 20: far less sensitive
    assert bool(out.powered) and out.powered_holm == (out.detectable_holm <= 0.05)


def _rule_cells(gains: dict, strict: dict, n_rule: int = 2, n_layers: int = 5):
    """Results and decisions of the earlier rule, one task x fraction: per pair and seed,
    scratch 0.5 and the other strategies 0.5 + that pair's gain (the rule only where (a) holds)."""
    results, decisions = [], []
    for pair, gain in gains.items():
        for seed in SEEDS:
            g = gain + 0.01 * (seed % 2)
            cell = {"task": "segmentation", "fraction": 0.1, "architecture": "pspnet", "pair": pair,
                    "seed": seed, "n_T": 60}
            values = {"scratch": 0.5, "reuse_all": 0.5 + g / 2, "rmse_only": 0.5 + g,
                      "rule": 0.5 + g if strict[pair] else 0.5, "random": 0.5}
            results += [{**cell, "regime": "siblings", "strategy": k, "value": v, "full_value": 0.8}
                        for k, v in values.items()]
            decisions.append({**cell, "strict_a": strict[pair], "n_rule": n_rule if strict[pair] else 0,
                              "n_rmse_only": n_rule, "n_layers": n_layers})
    return pd.DataFrame(results), pd.DataFrame(decisions)


def test_the_earlier_rules_claims_come_out_all_ways():
    near_far = _rule_cells({"near": 0.05, "far": -0.04}, {"near": True, "far": False})
    heads = e4.rule_claims(*near_far).set_index("claim")
    assert heads.verdict.to_dict() == {"H1": "holds", "H2": "holds", "H3a": "holds", "H3b": "holds"}
    assert heads.cells["H1"] == 5 and heads.cells["H3a"] == 10
    harmful = e4.rule_claims(*_rule_cells({"near": -0.05, "far": 0.04}, {"near": True, "far": False}))
    assert harmful.set_index("claim").verdict["H1"] == "refuted"
    never = e4.rule_claims(*_rule_cells({"near": 0.05, "far": 0.05}, {"near": False, "far": False}))
    assert never.set_index("claim").cells["H1"] == 0
    assert e4.design_check(near_far[0]).verdict.tolist() == ["holds"]  # the full-data target is far above scratch


def test_e4_findings_state_the_primary_claims_after_holm():
    """A headline that holds raw but not after Holm over the family is quoted as undecided,
    with its raw verdict and adjusted p beside it; one that survives is quoted as holds; the
    regimes' claims are exploratory and never enter the family."""
    heads = pd.DataFrame({"regime": "siblings", "claim": ["H1", "H1", "H2"],
                          "statement": [e4.HEADLINE["H1"]] * 2 + [e4.HEADLINE["H2"]],
                          "task": "segmentation", "n_T": [12, 60, 12], "verdict": "holds",
                          "estimate": [0.04, 0.05, 0.03], "ci_low": [0.005, 0.04, 0.004],
                          "ci_high": [0.075, 0.06, 0.056], "detectable": 0.02, "n": 5, "cells": 10})
    heads = pd.concat([heads, heads.iloc[:1].assign(regime="strangers")], ignore_index=True)
    none = heads.iloc[:0]
    verdicts = e4.records(heads, none, none, none, none)
    family = claims.adjust(verdicts.assign(notebook="04"))
    assert (family.family == "primary").sum() == 3 and family.judgment.str.startswith("strangers: ").sum() == 1
    layers = pd.DataFrame({"pair": ["a", "b"], "a": [True, False], "donor": "source", "regime": "siblings"})
    text = e4.findings(heads, layers, none, family)
    headline = text.splitlines()[0]
    assert "undecided at n_T = 12 (+0.04 [+0.005, +0.075], n = 5 seeds, holds before the correction, " \
           "Holm-adjusted p" in headline
    assert "holds at n_T = 60 (+0.05 [+0.04, +0.06], n = 5 seeds, Holm-adjusted p" in headline
    assert headline.endswith("after Holm's correction over the 3 primary claims recorded at this profile "
                             "(by notebook 04).")
    assert "- H2 at n_T = 12" in text and ": undecided (+0.03" in text and "strangers regime (exploratory)" in text


def test_e4_frames_and_no_peeking(runner_profile, monkeypatch):
    runner, profile = runner_profile
    seen, refs = [], []
    real_fit, real_refs = e4.fit_rule, e4.references

    def spy_fit(points):
        seen.append(set(points.pair))
        return real_fit(points)

    def spy_refs(target, n, prof):
        out = real_refs(target, n, prof)
        refs.append((target.n_train, n, out))
        return out
    monkeypatch.setattr(e4, "fit_rule", spy_fit)
    monkeypatch.setattr(e4, "references", spy_refs)
    results, decisions, layers = e4.compute(runner, profile, GRID, fractions=(0.25, 1.0))
    # the earlier rule's threshold for each pair is fitted on the other pairs' points only
    assert len(seen) == 2 and "fashion-split" not in seen[0] and "fashion-scrambled" not in seen[1]
    # (b) reads a reference trained on the n_T samples only, for the full run's steps
    for full, n, (ref, twin) in refs:
        assert ref.n_train == twin.n_train == n <= full and ref.steps == profile.steps
        assert ref.order_seed != twin.order_seed
    assert set(results.regime) == {"siblings", "strangers", "fine-tuned"}  # smoke runs the regimes on unet
    assert results.value.notna().all()
    assert {"scratch", "reuse_all", "random_k", "rule", "rmse_only"} <= set(results.strategy)
    src = layers[layers.donor == "source"]
    assert src.groupby(["regime", "seed", "fraction"]).b.agg(["any", "all"]).pipe(
        lambda t: t["any"].all() and not t["all"].any())  # (b) passes and fails on every seed
    grouped = src[src.group != ""]
    assert grouped.group.str.contains("pass").sum() and grouped.group.str.contains("fail").sum()
    assert (results[results.strategy.isin(["pass", "fail", "random_k"])].n_reused == profile.e4_group).all()
    wide = results[results.strategy.isin(["scratch", "rule"])].pivot_table(
        index=["pair", "seed", "n_T"], columns="strategy", values="value")
    none = decisions.set_index(["pair", "seed", "n_T"]).n_rule == 0
    assert np.allclose(wide.rule[none], wide.scratch[none])  # nothing selected: the rule is scratch
    assert (decisions.n_rule[~decisions.strict_a] == 0).all()  # (a) fails: the strict rule reuses nothing
    assert len(e4.control_table(layers)) == 2 * 2
    heads = e4.headline(results, layers)
    assert set(heads.claim) == {"H1", "H2", "H3a", "H3b"} and set(heads.regime) == set(e4.REGIMES)
    assert len(e4.design_check(results)) == 2 and len(e4.b_table(layers))
    # the regimes only at the fractions the profile names for them (the siblings at every one)
    narrowed = e4.compute(runner, dataclasses.replace(profile, e4_regime_fractions=(0.25,)), GRID,
                          fractions=(0.25, 1.0))[0]
    assert set(narrowed[narrowed.regime != "siblings"].fraction) == {0.25}
    assert set(narrowed[narrowed.regime == "siblings"].fraction) == {0.25, 1.0}
