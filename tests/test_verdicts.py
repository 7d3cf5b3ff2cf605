"""Every verdict rule on constructed data: one case that must hold, one that must be refuted,
one that must stay undecided (and the controls that gate J1 and J2)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reuse.study.experiments import adequacy
from reuse.study.experiments import layer_selection as e2
from reuse.study.experiments import network_reusability as e1
from reuse.study.experiments import rmse_threshold as e3
from reuse.study.experiments import small_data as e4
from reuse.toolkit import verdicts as v

SEEDS = range(5)
HOLDS = [0.90, 0.92, 0.88, 0.91, 0.89]  # clearly above every margin but 0.9
REFUTED = [0.10, 0.12, 0.08, 0.11, 0.09]
UNDECIDED = [0.2, 0.9, 0.3, 0.8, 0.5]  # mean 0.54, CI wide across 0.5


def test_verdict_core():
    assert v.verdict(0.6, 0.9, 0.5) == "holds"
    assert v.verdict(0.1, 0.4, 0.5) == "refuted"
    assert v.verdict(0.4, 0.6, 0.5) == "undecided"
    assert v.verdict(0.1, 0.4, 0.5, "below") == "holds"
    assert v.verdict(np.nan, 1.0, 0.5) == "undecided"
    with pytest.raises(ValueError, match="side='left'"):
        v.verdict(0, 1, 0, "left")


def test_mean_verdict_matches_a_hand_computed_t_interval():
    out = v.mean_verdict([1.0, 1.1, 1.2], 0.0)
    se = 0.1 / np.sqrt(3)
    half = 4.302652729911275 * se  # t(0.975, 2) * sd / sqrt(n)
    assert out["ci_low"] == pytest.approx(1.1 - half) and out["ci_high"] == pytest.approx(1.1 + half)
    assert out["verdict"] == "holds" and out["n"] == 3
    # detectable effect: (t_0.975 + t_0.8) * se on 2 degrees of freedom
    assert out["detectable"] == pytest.approx((4.302652729911275 + 1.0606601717798212) * se)
    assert v.mean_verdict([1.0, 2.0, 3.0], 0.0)["verdict"] == "undecided"  # CI 2 +- 2.48
    assert v.mean_verdict([1.0], 0.0)["verdict"] == "undecided"  # one seed decides nothing


def test_cluster_verdict_leaves_out_whole_seeds():
    frame = pd.DataFrame({"seed": np.repeat([0, 1, 2, 3], 10), "x": np.repeat([1.0, 2.0, 3.0, 4.0], 10)})
    seen = []

    def stat(f):
        seen.append(sorted(f.groupby("seed").size().unique()))
        return f.x.mean()
    out = v.cluster_verdict(frame, stat, 0.0)
    assert out["estimate"] == 2.5 and out["n_seeds"] == 4 and len(seen) == 5
    assert all(sizes == [10] for sizes in seen)  # every kept seed came with all its rows
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((2.5 - 3.182446305284263 * np.sqrt(5 / 12),
                                                             2.5 + 3.182446305284263 * np.sqrt(5 / 12)))
    assert out["verdict"] == "holds"
    assert out["detectable"] == pytest.approx(v.detectable(out["se"], 3))


def test_gated():
    assert v.gated("holds", "holds", "refuted") == ("holds", "passed")
    assert v.gated("refuted", "undecided", "refuted")[0] == "undecided"
    assert "negative control holds" in v.gated("holds", "holds", "holds")[1]


# ----------------------------------------------------------------------------- J1, C1-C4
def _cells(conditions, seeds=SEEDS, usable=True):
    return pd.DataFrame([{"architecture": a, "task": t, "pair": p, "seed": s, "usable": usable}
                         for a, t, p in conditions for s in seeds])


def _all_conv(source, twin=(1.0, 0.98, 1.02, 0.99, 1.01), other=(0.0, 0.05, -0.05, 0.02, -0.02),
              reset=(0.01, 0.03, -0.02, 0.0, 0.02)):
    rows = []
    for donor, values in (("source", source), ("twin", twin), ("different_init", other), ("theta_0", reset)):
        rows += [{"architecture": "unet", "task": "segmentation", "pair": "fashion-split", "seed": s,
                  "measure": "all_conv", "bn_reestimated": True, "donor": donor, "reuse_score": x,
                  "delta": x - 1}
                 for s, x in zip(SEEDS, values)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("values, expected", [(HOLDS, "holds"), (REFUTED, "refuted"),
                                              (UNDECIDED, "undecided")])
def test_j1(values, expected):
    cells = _cells([("unet", "segmentation", "fashion-split")])
    table = e1.verdicts(_all_conv(values), cells)
    assert table.verdict.tolist() == [expected] and table.controls.tolist() == ["passed"]


def test_j1_needs_the_source_above_its_theta_0_reset_too():
    """A source above the margin whose kernels do no better than theta_0's is not reusable
    *from the source*; without reset rows nothing is claimed."""
    cells = _cells([("unet", "segmentation", "fashion-split")])
    as_good_as_reset = e1.verdicts(_all_conv(HOLDS, reset=HOLDS), cells).iloc[0]
    assert as_good_as_reset.source_verdict == "holds" and as_good_as_reset.verdict != "holds"
    frame = _all_conv(HOLDS)
    no_reset = e1.verdicts(frame[frame.donor != "theta_0"], cells).iloc[0]
    assert no_reset.source_verdict == "holds" and no_reset.verdict == "undecided"


def test_j1_is_undecided_when_a_control_fails_and_drops_unusable_cells():
    cells = _cells([("unet", "segmentation", "fashion-split")])
    failed = e1.verdicts(_all_conv(HOLDS, twin=UNDECIDED), cells)
    assert failed.verdict.tolist() == ["undecided"] and "positive control" in failed.controls[0]
    failed = e1.verdicts(_all_conv(REFUTED, other=HOLDS), cells)
    assert failed.verdict.tolist() == ["undecided"] and "negative control holds" in failed.controls[0]
    assert e1.verdicts(_all_conv(HOLDS), _cells([("unet", "segmentation", "fashion-split")],
                                                usable=False)).empty


def _types(reset=None, **values):
    """Parameter-type swaps from the source with ``values`` per type, and the same types reset to
    theta_0 with ``reset`` (a type's values, default REFUTED: the source is well above it)."""
    rows = []
    for name, vals in values.items():
        for donor, xs in (("source", vals), (e1.RESET, (reset or {}).get(name, REFUTED))):
            rows += [{"architecture": "unet", "task": "segmentation", "pair": "fashion-split", "seed": s,
                      "measure": "param_type", "donor": donor, "param_type": name, "reuse_score": x}
                     for s, x in zip(SEEDS, xs)]
    return pd.DataFrame(rows)


def test_companion_checks_all_three_ways():
    cells = _cells([("unet", "segmentation", "fashion-split")])
    high, low = [x + 0.07 for x in HOLDS], REFUTED
    decided = e1.companion_checks(_types(bn_affine=high, bn_stats=low, conv_weight=low, conv_bias=high),
                                  cells).set_index("claim").verdict
    assert decided.to_dict() == {"C1": "holds", "C2": "holds", "C3": "holds", "C4": "holds"}
    flipped = e1.companion_checks(_types(bn_affine=low, bn_stats=high, conv_weight=high, conv_bias=low),
                                  cells).set_index("claim").verdict
    assert flipped.to_dict() == {"C1": "refuted", "C2": "refuted", "C3": "refuted", "C4": "refuted"}
    vague = e1.companion_checks(_types(bn_affine=UNDECIDED, bn_stats=UNDECIDED[::-1],
                                       conv_weight=UNDECIDED, conv_bias=[0.5, 1.3, 0.6, 1.2, 0.9]),
                                cells).set_index("claim").verdict
    assert vague.to_dict() == {"C1": "undecided", "C2": "undecided", "C3": "undecided", "C4": "undecided"}


def test_c2_and_c4_need_more_than_their_theta_0_reset():
    """BN weight and bias, and conv biases, that keep little loss only as well as the same
    parameters put back to theta_0 are not shown reusable: the margin alone would say holds."""
    cells = _cells([("unet", "segmentation", "fashion-split")])
    high = [x + 0.07 for x in HOLDS]
    types = dict(bn_affine=high, bn_stats=REFUTED, conv_weight=REFUTED, conv_bias=high)
    for reset, verdict in ((high, "undecided"), ([x + 0.02 for x in high], "refuted")):
        checks = e1.companion_checks(_types(reset={"bn_affine": reset, "conv_bias": reset}, **types),
                                     cells).set_index("claim")
        for claim in ("C2", "C4"):
            row = checks.loc[claim]
            assert row.margin_verdict == "holds" and row.verdict == verdict, (claim, row)
            assert row.reset_estimate == pytest.approx(np.mean(reset))
            assert row.minus_reset_estimate == pytest.approx(np.mean(high) - np.mean(reset))
        assert checks.loc[["C1", "C3"], "verdict"].tolist() == ["holds", "holds"]  # no reset applies
        assert checks.loc[["C1", "C3"], "minus_reset_verdict"].isna().all()
    no_reset = _types(**types)
    no_reset = e1.companion_checks(no_reset[no_reset.donor == "source"], cells).set_index("claim")
    assert no_reset.loc[["C2", "C4"], "verdict"].tolist() == ["undecided", "undecided"]
    records = e1.records(e1.verdicts(_all_conv(HOLDS), cells), checks.reset_index(), pd.DataFrame())
    records = records.set_index("judgment")
    assert records.loc["C2", "p"] < 0.05 and np.isnan(records.loc["C1", "p"])  # refuted by the reset


# ----------------------------------------------------------------------------- J2, Y1-Y4
def _swaps(source_by_layer, twin=1.0, other=0.0, pairs=("fashion-split",), noise=0.02, reset=0.0):
    rows = []
    rng = np.random.default_rng(0)
    for pair in pairs:
        for index, src in enumerate(source_by_layer):
            for donor, values in (("source", src), ("twin", twin), ("different_init", other),
                                  (e2.RESET, reset)):
                values = values if isinstance(values, list) else [values] * 5
                rows += [{"architecture": "unet", "task": "segmentation", "pair": pair, "seed": s,
                          "donor": donor, "layer": f"l{index}", "index": index,
                          "depth": index / max(len(source_by_layer) - 1, 1), "bn_reestimated": True,
                          "reuse_score": x + noise * rng.standard_normal(), "delta": 0.0}
                         for s, x in zip(SEEDS, values)]
    return pd.DataFrame(rows)


def test_j2_per_layer_all_three_ways_and_gated():
    swaps = _swaps([HOLDS, REFUTED, UNDECIDED])
    selected = e2.layer_verdicts(swaps, _cells([("unet", "segmentation", "fashion-split")]))
    assert selected.verdict.tolist() == ["holds", "refuted", "undecided"]
    assert selected.selected.tolist() == [True, False, False]
    cells = _cells([("unet", "segmentation", "fashion-split")])
    gated = e2.layer_verdicts(_swaps([HOLDS], twin=UNDECIDED), cells)
    assert gated.verdict.tolist() == ["undecided"]
    # above the margin but no better than the layer reset to theta_0: not shown reusable
    as_reset = e2.layer_verdicts(pd.concat([_swaps([HOLDS], reset=HOLDS),
                                            _swaps([HOLDS], reset=[x + 0.3 for x in HOLDS]).assign(index=1)]),
                                 cells)
    assert as_reset.source_verdict.tolist() == ["holds", "holds"]
    assert as_reset.minus_reset_verdict.tolist() == ["undecided", "refuted"]
    assert as_reset.verdict.tolist() == ["undecided", "refuted"]


def test_yosinski_checks_all_three_ways():
    cells = _cells([("unet", "segmentation", p) for p in e2.DISTANCE_ORDER])
    decreasing = [[0.97] * 5, [0.8] * 5, [0.6] * 5, [0.4] * 5]
    near = _swaps(decreasing, pairs=("fashion-split",))
    far = _swaps([[x - 0.05 for x in layer] for layer in decreasing], pairs=(e2.DISTANCE_ORDER[1],))
    gains = pd.DataFrame([{"architecture": "unet", "task": "segmentation", "pair": "fashion-split", "seed": s,
                           "layer": "l0", "set": "single", "mode": m, "gain": g + 0.01 * s}
                          for s in SEEDS for m, g in (("frozen", 0.0), ("finetuned", 0.1))])
    table = e2.yosinski_checks(pd.concat([near, far]), cells, gains).set_index("check")
    checks = table.verdict
    assert checks.to_dict() == {"Y1": "holds", "Y2": "holds", "Y3": "holds", "Y4": "holds"}
    assert -1 <= table.ci_low["Y2"] <= table.ci_high["Y2"] <= 1  # a rho, judged on Fisher's z scale
    increasing = [[0.1] * 5, [0.4] * 5, [0.6] * 5, [0.8] * 5]
    near = _swaps(increasing, pairs=("fashion-split",))
    far = _swaps([[x + 0.05 for x in layer] for layer in increasing], pairs=(e2.DISTANCE_ORDER[1],))
    flipped = gains.assign(mode=gains["mode"].map({"frozen": "finetuned", "finetuned": "frozen"}))
    checks = e2.yosinski_checks(pd.concat([near, far]), cells, flipped).set_index("check").verdict
    assert checks.to_dict() == {"Y1": "refuted", "Y2": "refuted", "Y3": "refuted", "Y4": "refuted"}
    flat = [UNDECIDED, UNDECIDED[::-1]]
    vague_gains = gains.assign(gain=np.where(gains["mode"] == "frozen", 0.0,
                                             np.where(gains.seed % 2 == 0, 0.2, -0.2)))
    checks = e2.yosinski_checks(pd.concat([_swaps(flat, noise=0.3), _swaps(flat, pairs=(e2.DISTANCE_ORDER[1],),
                                                                               noise=0.3)]),
                                cells, vague_gains).set_index("check").verdict
    assert set(checks) == {"undecided"}


# ----------------------------------------------------------------------------- J3
def _points(separable: bool, flip: bool = False):
    """Source points whose rmse separates reusable from not (or not at all), and twin /
    other-init points on either side of the fitted threshold."""
    rng = np.random.default_rng(1)
    rows = []
    for pair in ("fashion-split", "fashion-to-digits"):
        for s in SEEDS:
            for i in range(10):
                reusable = i % 2 == 0
                x = (0.1 if reusable != flip else 1.0) + 0.05 * rng.random() if separable else rng.random()
                rows.append({"architecture": "unet", "task": "segmentation", "pair": pair, "seed": s,
                             "donor": "source", "layer": f"l{i}", "rmse": x, "rel_rmse": x, "floor_ratio": x,
                             "depth": i / 9, "log_size": np.log(100 + 10 * i),  # blind to the alternation
                             "reuse_score": 0.9 if reusable else 0.1, "reusable": reusable})
                for donor, value in (("twin", 0.01), ("different_init", 5.0)):
                    rows.append({**rows[-1], "donor": donor, "rmse": value, "rel_rmse": value,
                                 "floor_ratio": value})
    return pd.DataFrame(rows)


def test_j3_all_three_ways():
    table = e3.criterion_table(_points(True))
    assert set(table.verdict) == {"holds"} and set(table.controls) == {"passed"}
    flipped = e3.criterion_table(_points(True, flip=True))  # big RMSE = reusable
    assert set(flipped.acc_verdict) == {"refuted"}
    noise = e3.criterion_table(_points(False))
    assert set(noise.acc_verdict) <= {"undecided", "refuted"} and "holds" not in set(noise.verdict)


def test_dose_table_all_three_ways():
    rows = []
    for s in SEEDS:
        for shift in (0.0, 0.5, 1.0):
            rows.append({"seed": s, "shift": shift, "layer": "l0", "rel_rmse": 0.2 + shift, "reuse_score": 1 - shift})
            rows.append({"seed": s, "shift": shift, "layer": "(all conv)", "rel_rmse": np.nan,
                         "reuse_score": 1 - shift})
    dose = pd.DataFrame(rows)
    table = e3.dose_table(dose)
    assert set(table.verdict) == {"holds"}
    # rho is +-1 in every seed: on Fisher's z scale it reads +-0.9999 and its interval stays in [-1, 1]
    assert (table.ci_low <= table.estimate).all() and (table.estimate <= table.ci_high).all()
    assert table.estimate.abs().tolist() == pytest.approx([0.9999, 0.9999])
    reversed_ = dose.assign(rel_rmse=1.2 - dose.rel_rmse, reuse_score=-dose.reuse_score)
    assert set(e3.dose_table(reversed_).verdict) == {"refuted"}
    # half the seeds rise with the shift, half fall: no dependable direction
    sign = np.where(dose.seed % 2 == 0, 1.0, -1.0)
    mixed = dose.assign(rel_rmse=sign * dose["shift"], reuse_score=sign * dose["shift"])
    table = e3.dose_table(mixed)
    assert set(table.verdict) == {"undecided"} and (table.ci_low >= -1).all() and (table.ci_high <= 1).all()


# ----------------------------------------------------------------------------- E4, adequacy
def _results(rule_minus_scratch):
    rows = []
    for s, d in zip(SEEDS, rule_minus_scratch):
        for strategy, value in (("scratch", 0.5), ("reuse_all", 0.5 + d)):
            rows.append({"task": "segmentation", "fraction": 0.1, "n_T": 60, "architecture": "unet",
                         "pair": "fashion-split", "seed": s, "regime": "siblings", "strategy": strategy,
                         "value": value})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("diffs, expected", [([0.05, 0.06, 0.04, 0.05, 0.07], "holds"),
                                             ([-0.05, -0.06, -0.04, -0.05, -0.07], "refuted"),
                                             ([0.05, -0.06, 0.04, -0.05, 0.0], "undecided")])
def test_e4_comparison(diffs, expected):
    tests = e4.comparisons(_results(diffs))
    assert tests.set_index("comparison").verdict["reuse_all - scratch"] == expected


def test_e4_controls_all_three_ways():
    def layers(twin, other):  # layers of 10 passing (b) per seed, for each control
        return pd.DataFrame([{"task": "segmentation", "fraction": 0.1, "regime": "siblings", "seed": s,
                              "donor": donor, "layer": f"l{i}", "b": i < n}
                             for s, t, o in zip(SEEDS, twin, other)
                             for donor, n in (("twin", t), ("different_init", o)) for i in range(10)])
    good = e4.control_table(layers([9, 10, 9, 8, 10], [0, 1, 0, 0, 1])).verdict.tolist()
    bad = e4.control_table(layers([0, 1, 0, 0, 1], [9, 10, 9, 8, 10])).verdict.tolist()
    vague = e4.control_table(layers([2, 9, 3, 8, 5], [2, 9, 3, 8, 5])).verdict.tolist()
    assert good == ["holds", "refuted"] and bad == ["refuted", "holds"] and vague == ["undecided"] * 2


def test_adequacy_summary():
    """A condition is adequate when every seed's target and twin have plateaued; one run
    still rising (here seed 2's twin in 'b') is enough to fail it."""
    cells = pd.DataFrame([{"architecture": "unet", "task": "segmentation", "pair": p, "seed": s,
                           "metric": "miou", "target_value": 0.8, "twin_value": 0.8, "chance": 0.1,
                           "usable": True, "target_rise": 0.01, "twin_rise": rise,
                           "target_plateaued": True, "twin_plateaued": adequacy.plateaued(rise)}
                          for p in ("a", "b") for s in SEEDS
                          for rise in [0.2 if (p, s) == ("b", 2) else 0.02]])
    table = adequacy.summary(cells).set_index("pair")
    assert table.adequate.to_dict() == {"a": True, "b": False}
    assert table.max_rise.to_dict() == {"a": 0.02, "b": 0.2}
    assert "not adequate: unet/segmentation/b: largest late rise 0.200" in "\n".join(adequacy.verdict_lines(
        table.reset_index()))


def test_one_home_for_intervals_one_seed_gives_no_interval_everywhere():
    """stats.mean_ci is the interval of verdicts and of the figures' error bars alike."""
    from reuse.study.plots.common import t_interval
    from reuse.toolkit import stats

    one = stats.mean_ci([0.7])
    assert one["estimate"] == 0.7 and np.isnan(one["ci_low"]) and np.isnan(one["ci_high"])
    assert all(np.isnan(t_interval([0.7])))
    mv = v.mean_verdict([0.7], 0.5)
    assert mv["verdict"] == "undecided" and np.isnan(mv["ci_low"])
    three = [0.6, 0.7, 0.8]
    assert t_interval(three) == (stats.mean_ci(three)["ci_low"], stats.mean_ci(three)["ci_high"])
    assert v.mean_verdict(three, 0.5)["ci_low"] == stats.mean_ci(three)["ci_low"]


def test_correlation_verdict_on_fisher_z_all_three_ways():
    """Per-seed correlations: the interval is back-transformed from z, the verdict read from
    it, and the detectable effect is the z-scale effect mapped back as a distance from the margin."""
    holds = v.correlation_verdict([0.9, 0.8, 0.95, 0.85, 0.9])
    assert holds["verdict"] == "holds" and holds["ci_high"] < 1 and holds["n"] == 5
    assert v.correlation_verdict([-0.9, -0.8, -0.95, -0.85, -0.9])["verdict"] == "refuted"
    assert v.correlation_verdict([0.6, -0.4, 0.2, -0.1, 0.3])["verdict"] == "undecided"
    assert v.correlation_verdict([-0.7, -0.9, -0.8], side="below")["verdict"] == "holds"
    r = np.array([0.3, 0.5, 0.4])
    se_z = np.arctanh(r).std(ddof=1) / np.sqrt(3)
    out = v.correlation_verdict(r, 0.2, "above")
    z_effect = (4.302652729911275 + 1.0606601717798212) * se_z  # (t_0.975 + t_0.8) on 2 df
    assert out["detectable"] == pytest.approx(np.tanh(np.arctanh(0.2) + z_effect) - 0.2)
    assert v.correlation_verdict(r, 0.2, "below")["detectable"] == pytest.approx(0.2 - np.tanh(np.arctanh(0.2) - z_effect))
    assert np.isnan(v.correlation_verdict([0.5])["detectable"])
    assert set(out) == set(v.mean_verdict(r, 0.2))  # the same keys as mean_verdict


def test_cluster_verdict_of_a_correlation_maps_its_detectable_effect_back():
    frame = pd.DataFrame({"seed": np.repeat(np.arange(4), 5), "x": np.tile(np.arange(5.0), 4)})
    frame["y"] = frame.x + np.repeat([0.1, 0.3, 0.2, 0.4], 5) * np.tile([1, -1, 0, 1, -1], 4)
    out = v.cluster_verdict(frame, lambda f: float(np.corrcoef(f.x, f.y)[0, 1]), 0.0, correlation=True)
    assert out["verdict"] == "holds" and out["ci_high"] < 1
    assert out["detectable"] == pytest.approx(np.tanh(v.detectable(out["se"], 3)))
