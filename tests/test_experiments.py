"""E1, training adequacy and the pieces every experiment shares, on a tiny profile."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from reuse.study import plots
from reuse.study.config import Grid, SmallData, get_profile
from reuse.study.experiments import adequacy, common
from reuse.study.experiments import network_reusability as e1
from reuse.study.training.models import build_model, conv_layer_names, head_layer
from reuse.study.training.train import MONITOR_SIZE, RunSpec
from reuse.toolkit.metrics import chance_level
from reuse.toolkit.verdicts import VERDICTS

GRID = Grid(("unet", "pspnet"), ("segmentation",), ("fashion-split", "fashion-scrambled"))


@pytest.fixture(scope="module")
def e1_frames(runner_profile):
    runner, profile = runner_profile
    return e1.compute(runner, profile, GRID)


def test_e1_frame_is_tidy_and_complete(e1_frames):
    f, cells = e1_frames
    for col in ["architecture", "task", "pair", "seed", "donor", "measure", "bn_reestimated", "k",
                "n_layers", "param_type", "metric", "value", "target_value", "chance", "delta",
                "reuse_score"]:
        assert col in f.columns
    assert len(cells) == 2 * 2 * 2 and {"gap", "usable", "min_gap"} <= set(cells.columns)
    assert f.groupby(["architecture", "pair", "seed"]).size().groupby("architecture").nunique().eq(1).all()
    unet = f[(f.architecture == "unet") & (f.seed == 0) & (f.pair == "fashion-split")]
    n = int(unet.n_layers.iloc[0])
    assert sorted(unet[unet.measure == "prefix"].k)[::len(unet[unet.measure == "prefix"]) - 1] == [1, n]
    all_conv = unet[unet.measure == "all_conv"]
    assert set(zip(all_conv.donor, all_conv.bn_reestimated)) == {
        (d, b) for d in (*common.CONDITION_DONORS, common.RESET) for b in (False, True)} | {
        (d, True) for d in e1.STRANGERS}  # the profile's strangers grid is UNet segmentation
    # prefix n and suffix n both swap every kernel: the same as all_conv (BN re-estimated)
    full = unet[(unet.measure.isin(["prefix", "suffix"])) & (unet.k == n)].value
    shared = all_conv[(all_conv.donor == "source") & all_conv.bn_reestimated].value
    assert np.allclose(full, shared.iloc[0])
    np.testing.assert_allclose(f.delta, f.value - f.target_value)


def test_heads_are_never_swapped(e1_frames):
    f, _ = e1_frames
    # every conv but the head (the last) is swappable, whatever the pair
    model = build_model("unet", "segmentation", 1, 6, 4, 1)
    assert set(f[f.architecture == "unet"].n_layers) == {len(conv_layer_names(model)) - 1}
    assert head_layer(model) == "head"
    assert common.swappable(["a", "head"]) == ["a"]
    # pspnet feeds BatchNorm from every conv but its (excluded) head: no conv bias to swap
    types = f[(f.architecture == "pspnet") & (f.measure == "param_type")]
    assert "conv_bias" not in set(types.param_type)
    assert "conv_bias" in set(f[(f.architecture == "unet") & (f.measure == "param_type")].param_type)


def test_e1_verdict_tables_run_on_real_frames(e1_frames):
    f, cells = e1_frames
    table = e1.verdicts(f, cells)
    checks = e1.companion_checks(f, cells)
    assert set(table.verdict) <= {"holds", "refuted", "undecided"}
    # the source's verdict needs the margin and the theta_0 reset: never more than either part
    assert {"reset_estimate", "minus_reset_verdict", "reusable"} <= set(table.columns)
    assert not ((table.reusable == "holds") & (table.minus_reset_verdict != "holds")).any()
    assert list(checks.claim) == ["C1", "C2", "C3", "C4"]
    # C2 and C4 are judged against the same parameter types put back to theta_0, cell by cell
    types = f[f.measure == "param_type"]
    assert types.groupby([*common.FACTORS, "param_type"]).donor.apply(set).eq(
        {"source", "twin", common.RESET}).all()
    c = checks.set_index("claim")
    assert set(c.loc[["C2", "C4"], "minus_reset_verdict"]) <= set(VERDICTS)
    assert not ((c.verdict == "holds") & c.minus_reset_verdict.isin(["refuted", "undecided"])).any()
    regimes = e1.regimes(f, cells)
    records = e1.records(table, checks, regimes)
    assert len(records) == len(table) + 4 + 2 * len(regimes) and set(records.columns) >= {"judgment", "verdict"}
    assert records.n.notna().all()  # every verdict carries its number of seeds


def test_a_regime_verdict_carries_its_own_seeds_and_detectable_effect():
    """The strangers' rows print their own n and detectable effect, not the matching gain's."""
    regime = {"architecture": "pspnet", "task": "segmentation", "pair": "fashion-split", "n": 5}
    for name, n in (("strangers", 4), ("strangers_aligned", 3)):
        regime.update({f"{name}_{k}": v for k, v in (("verdict", "refuted"), ("estimate", 0.1), ("ci_low", 0.0),
                                                     ("ci_high", 0.2), ("n", n), ("detectable", 0.05 * n))})
    records = e1.records(pd.DataFrame(), pd.DataFrame(), pd.DataFrame([regime])).set_index("judgment")
    assert records.n.tolist() == [4, 3] and records.detectable.tolist() == pytest.approx([0.2, 0.15])


def test_excluded_cells_are_listed_with_their_numbers():
    cells = pd.DataFrame([{"architecture": "unet", "task": "segmentation", "pair": "p", "seed": 3,
                           "metric": "miou", "target_value": 0.15, "chance": 0.1, "gap": 0.05,
                           "min_gap": 0.1, "usable": False}])
    (line,) = common.excluded_text(cells)
    assert "unet/segmentation/p seed 3" in line and "gap 0.05 < 0.1" in line
    assert "No cell excluded" in common.excluded_text(cells.assign(usable=True))[0]


def test_specs_of_a_condition_share_theta0_and_split_the_target(runner_profile):
    runner, profile = runner_profile
    sp = common.specs(runner, profile, common.Condition("unet", "segmentation", "fashion-split", 0))
    strangers = ("different_init", "stranger")
    assert {s.init_seed for k, s in sp.items() if k not in strangers} == {0}
    assert sp["different_init"].init_seed == sp["stranger"].init_seed == common.DIFFERENT_INIT_OFFSET
    assert sp["stranger"].replace(init_seed=0) == sp["source"]
    assert (sp["target"].block, sp["twin"].block) == (0, 1)
    assert sp["twin"].order_seed != sp["target"].order_seed != sp["order"].order_seed
    assert sp["target"].width == profile.width("unet")
    x0, _ = runner.train_split(sp["target"])
    x1, _ = runner.train_split(sp["twin"])
    assert not any(bool((a == b).all()) for a in x0[:10] for b in x1)  # disjoint blocks
    labels = common.specs(runner, profile, common.Condition("unet", "segmentation",
                                                            "fashion-random-labels", 0))
    assert labels["target"] == sp["target"]  # its target runs are fashion-split's
    late = common.Condition("unet", "segmentation", "fashion-split", profile.seeds[-1])
    assert "order" not in common.specs(runner, profile, late)  # only the first order_twins seeds


def test_small_spec():
    target = RunSpec("unet", "segmentation", "fashion-split", domain="target", n_train=1000, steps=800)
    small = SmallData(steps=300, batch_size=32)
    assert common.small_spec(target, 1000, small) is target
    tiny = common.small_spec(target, 10, small)
    assert (tiny.n_train, tiny.batch_size, tiny.steps) == (10, 2, 300)
    assert common.small_spec(target, 500, small).batch_size == 32
    with pytest.raises(ValueError, match="n=2000"):
        common.small_spec(target, 2000, small)


def test_adequacy_judges_each_run_by_its_own_curve(runner_profile):
    """No run longer than the profile's is trained, and seed 1's verdict is the same with
    or without seed 0 in the grid (it used to be measured against seed 0's long run)."""
    runner, profile = runner_profile
    grid = Grid(("pspnet",), ("segmentation",), ("fashion-split",))
    curves, cells = adequacy.compute(runner, profile, grid)
    assert set(curves.run) == {"target", "twin"} and curves.step.max() == profile.steps
    first = curves[(curves.seed == 0) & (curves.run == "target")]
    assert cells.target_rise[0] == adequacy.rise_share(list(first.step), list(first.value), cells.chance[0])
    assert cells.target_plateaued[0] == adequacy.plateaued(cells.target_rise[0])
    _, alone = adequacy.compute(runner, dataclasses.replace(profile, seeds=(1,)), grid)
    columns = ["target_rise", "twin_rise", "target_plateaued", "twin_plateaued"]
    pd.testing.assert_frame_equal(alone[columns], cells[cells.seed == 1][columns].reset_index(drop=True))
    table = adequacy.summary(cells)
    assert len(table) == 1 and "adequate" in table
    assert adequacy.verdict_lines(table)[0].startswith("- Training adequacy")


def test_sources_are_judged_on_their_own_curves_and_chance(e1_frames, runner_profile):
    """Every rung's source (the scrambled one included) gets its learning curve, scored on the
    source domain's own test images, and a chance level from its own (scrambled) targets."""
    runner, profile = runner_profile
    curves, cells = adequacy.compute_sources(runner, profile, GRID)
    assert set(curves.run) == {"source"} and set(cells.pair) == set(GRID.pairs)
    assert len(cells) == 2 * 2 * len(profile.seeds) and curves.step.max() == profile.steps
    targets, _ = adequacy.compute(runner, profile, Grid(("pspnet",), ("segmentation",), ("fashion-split",)))
    assert list(curves.columns) == list(targets.columns)  # one frame for notebook 01's CSV and figure
    fig = plots.network_reusability.learning_curves(pd.concat([targets, curves]))
    titles = {ax.get_title() for ax in fig.axes}
    assert "pspnet / segmentation\nfashion-scrambled (source)" in titles
    assert "pspnet / segmentation\nfashion-split" in titles  # the target's panel, apart from its source's
    scrambled = cells[(cells.pair == "fashion-scrambled") & (cells.architecture == "unet")].iloc[0]
    run = common.trained(runner, profile, [common.Condition("unet", "segmentation", "fashion-scrambled",
                                                            int(scrambled.seed))], ("source",))[0]["source"]
    spec = run.spec
    _, test_y = runner.split("fashion-scrambled", "source", "segmentation", "test", spec.data_seed, 0.0,
                             min(MONITOR_SIZE, runner.available("fashion-scrambled", "source", "test")),
                             spec.image_size)
    assert torch.equal(test_y, runner.monitor_split(spec)[1])  # its curve's images: the source's own
    expected = chance_level("segmentation", runner.train_split(spec)[1], test_y, runner.n_outputs(spec))["miou"]
    assert scrambled.chance == pytest.approx(expected)
    curve = curves[(curves.pair == "fashion-scrambled") & (curves.architecture == "unet")
                   & (curves.seed == scrambled.seed)]
    assert scrambled.source_value == curve.value.iloc[-1]
    assert scrambled.source_rise == adequacy.rise_share(list(curve.step), list(curve.value), expected)
    table = adequacy.source_summary(cells)
    assert len(table) == 4 and {"adequate", "smallest_gap", "learned_seeds", "plateaued_seeds"} <= set(table)
    lines = adequacy.source_lines(table)
    assert lines[0].startswith("- Source adequacy") and len(lines) == 5
    assert any("unet/segmentation/fashion-scrambled: the source" in line for line in lines)


def test_a_source_that_ends_near_its_own_chance_did_not_learn():
    cells = pd.DataFrame([{"architecture": "unet", "task": "segmentation", "pair": pair, "seed": s,
                           "metric": "miou", "source_value": value, "chance": 0.3, "gap": value - 0.3,
                           "min_gap": 0.1, "learned": value - 0.3 >= 0.1, "source_rise": 0.01,
                           "source_plateaued": True}
                          for pair, values in (("fashion-split", [0.7, 0.72, 0.69]),
                                               ("fashion-scrambled", [0.45, 0.35, 0.33]))
                          for s, value in enumerate(values)])
    table = adequacy.source_summary(cells).set_index("pair")
    assert table.adequate.to_dict() == {"fashion-split": True, "fashion-scrambled": False}
    assert table.loc["fashion-scrambled", "learned_seeds"] == 1
    assert table.loc["fashion-scrambled", "smallest_gap"] == pytest.approx(0.03)
    lines = adequacy.source_lines(table.reset_index())
    assert lines[0].startswith("- Source adequacy: 1 of 2 sources")
    assert "fashion-scrambled: the source did not learn its task in 2 of 3 seeds: miou 0.377 against its own " \
           "chance 0.3" in lines[2]
    assert "fashion-split: the source learned its task" in lines[1]


def test_a_run_still_rising_in_its_last_quarter_is_not_adequate():
    steps = [5, 10, 15, 20, 25, 30, 35, 40]                  # 30 = 75% of 40
    rising = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.66, 0.7]       # +0.1 of a 0.5 gap: 20%
    flat = [0.1, 0.4, 0.6, 0.68, 0.69, 0.695, 0.698, 0.7]    # +0.005: 1%
    assert adequacy.late_rise(steps, rising) == pytest.approx(0.1)
    assert adequacy.rise_share(steps, rising, 0.2) == pytest.approx(0.2)
    assert not adequacy.plateaued(adequacy.rise_share(steps, rising, 0.2))
    assert adequacy.plateaued(adequacy.rise_share(steps, flat, 0.2))
    assert not adequacy.plateaued(adequacy.rise_share(steps, [0.2] * 8, 0.2))   # flat at chance
    assert adequacy.plateaued(adequacy.rise_share(steps, flat[:-1] + [0.69], 0.2))  # fell a little


def test_session_and_output_dirs(fake_fashion):
    prof, runner = common.session("smoke", [3], "cpu", None, threads=2, architectures=["unet"])
    assert prof.seeds == (3,) and prof.threads == 2 and runner.threads == 2
    assert prof.grid.architectures == ("unet",) and prof.grid.tasks == get_profile("smoke").grid.tasks
    figures, results = common.output_dirs("smoke")
    assert str(figures) == "../figures/smoke" and str(results) == "../results/smoke"


def test_strangers_regime_is_measured_raw_and_weight_matched(e1_frames):
    """UNet segmentation is the tiny profile's strangers grid: a source from another theta_0,
    swapped in raw and after weight matching, one row each per condition and seed."""
    f, cells = e1_frames
    strangers = f[f.donor.isin(e1.STRANGERS)]
    assert set(strangers.architecture) == {"unet"} and strangers.bn_reestimated.all()
    assert strangers.groupby(["pair", "seed"]).donor.nunique().eq(2).all()
    table = e1.regimes(f, cells)
    assert {"siblings_verdict", "strangers_verdict", "strangers_aligned_verdict",
            "matching_gain_estimate"} <= set(table.columns) or table.empty
    assert "strangers" in e1.regime_text(table) or table.empty


def test_criterion_spread_splits_the_variance_between_layer_and_source():
    """A criterion set by the layer alone has no spread across sources (layer share 1); one set
    by the source alone has no spread across layers (source share 1)."""
    rows = [{"architecture": "unet", "pair": p, "layer": layer, "seed": s, "by_layer": i, "by_source": j}
            for i, layer in enumerate("abc") for j, p in enumerate(["near", "far"]) for s in (0, 1)]
    out = common.criterion_spread(pd.DataFrame(rows), ["by_layer", "by_source"], ["architecture"]).set_index("criterion")
    assert out.loc["by_layer", ["across_sources", "across_layers", "layer_share", "source_share"]].tolist() == [0, 2, 1, 0]
    assert out.loc["by_source", ["across_sources", "across_layers", "layer_share", "source_share"]].tolist() == [1, 0, 0, 1]


def test_j1_is_tabled_against_label_overlap_and_shift():
    table = pd.DataFrame({"architecture": "pspnet", "task": "segmentation",
                          "pair": ["fashion-shifted@0.25", "fashion-overlap@0.6", "fashion-overlap@0.2", "fashion-split",
                                   "fashion-split-shifted@0.5", "digits-to-fashion"],
                          "verdict": ["holds", "undecided", "refuted", "refuted", "refuted", "refuted"],
                          "source_estimate": 0.5, "source_ci_low": 0.4, "source_ci_high": 0.6,
                          "minus_reset_estimate": 0.1, "controls": "passed", "n": 5})
    coords = e1.by_coordinates(table).set_index("pair")
    assert coords.label_overlap.tolist() == [1.0, 0.6, 0.2, 0.0, 0.0, 0.0]
    assert coords["shift"].tolist() == [0.25, 0, 0, 0, 0.5, 0] and coords.other_data["digits-to-fashion"]
    text = e1.coordinates_text(coords.reset_index())
    assert "holds on 1 (fashion-shifted@0.25 (overlap 1, shift 0.25))" in text
    assert "undecided on 1" in text and "partial label overlap J1 is refuted, undecided" in text
