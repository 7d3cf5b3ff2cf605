"""E2: layer positions, first k, the frames of M1 and M2."""

import numpy as np
import pandas as pd
import pytest

from reuse.study.config import Grid
from reuse.study.experiments import layer_selection as e2

GRID = Grid(("unet",), ("autoencoder",), ("fashion-split", "digits-to-fashion"))


def test_layer_points_spread_from_first_to_last():
    assert e2.layer_points(13, 3) == [0, 6, 12]
    assert e2.layer_points(5, None) == [0, 1, 2, 3, 4] == e2.layer_points(5, 9)
    assert e2.layer_points(8, 1) == [0]
    with pytest.raises(ValueError, match="points=0"):
        e2.layer_points(8, 0)


def test_e2_frames_are_tidy(runner_profile):
    runner, profile = runner_profile
    swaps, cells = e2.swap_scores(runner, profile, GRID)
    n = int(swaps.n_layers.iloc[0])
    assert len(swaps) == 2 * 2 * 4 * 2 * n  # pairs x seeds x (donors + theta_0 reset) x BN variants x layers
    assert set(swaps.donor) == {"source", "twin", "different_init", e2.RESET} and len(cells) == 4
    selected = e2.layer_verdicts(swaps, cells.assign(usable=True))
    assert len(selected) == 2 * n and set(selected.verdict) <= {"holds", "refuted", "undecided"}
    table = e2.selection_table(selected)
    assert list(table.n_layers) == [n, n] and (table.holds + table.refuted + table.undecided == n).all()
    gains = e2.init_gains(runner, profile, Grid(("unet",), ("autoencoder",), ("fashion-split",)))
    assert set(gains["set"]) == {"single", "prefix"} and set(gains["mode"]) == {"frozen", "finetuned"}
    assert sorted(set(gains["index"])) == [0, n - 1]
    np.testing.assert_allclose(gains.gain, gains.value - gains.scratch_value)
    first = gains[gains["index"] == 0]  # layer 1 alone is layers 1..1: the same run
    assert first.groupby(["seed", "mode"]).value.nunique().eq(1).all()
    checks = e2.yosinski_checks(swaps, cells.assign(usable=True), gains)
    assert list(checks.check) == ["Y1", "Y2", "Y3", "Y4"]
    assert len(e2.records(selected, checks)) == len(selected) + 4


def _swaps(source: float, reset: float, seeds=range(5)) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One layer of one condition: the source and the theta_0 reset near the given scores, the
    twin near 1 and the different-init control near 0 (controls that behave)."""
    rng = np.random.default_rng(0)
    means = {"source": source, e2.RESET: reset, "twin": 0.95, "different_init": 0.05}
    rows = [{"architecture": "unet", "task": "segmentation", "pair": "a", "seed": s, "donor": donor,
             "layer": "l0", "index": 0, "n_layers": 1, "depth": 0.0, "bn_reestimated": True,
             "reuse_score": m + rng.normal(0, 0.02), "delta": m - 1}
            for s in seeds for donor, m in means.items()]
    cells = pd.DataFrame([{"architecture": "unet", "task": "segmentation", "pair": "a", "seed": s,
                           "usable": True} for s in seeds])
    return pd.DataFrame(rows), cells


@pytest.mark.parametrize("reset, verdict", [(0.9, {"undecided", "refuted"}), (0.2, {"holds"})])
def test_a_layer_is_reusable_only_above_its_theta_0_reset(reset, verdict):
    swaps, cells = _swaps(0.9, reset)
    out = e2.layer_verdicts(swaps, cells).iloc[0]
    assert out.source_verdict == "holds" and out.controls == "passed"  # the margin alone would say holds
    assert out.verdict in verdict and out.selected == (verdict == {"holds"})
    assert out.reset_estimate == pytest.approx(reset, abs=0.03)
    assert out.minus_reset_estimate == pytest.approx(0.9 - reset, abs=0.03)
    y1 = e2.yosinski_checks(swaps.assign(reuse_score=swaps.reuse_score + 0.05), cells, None)
    assert y1.set_index("check").loc["Y1", "verdict"] in verdict


def test_layer_verdicts_need_the_reset_rows():
    swaps, cells = _swaps(0.9, 0.2)
    with pytest.raises(ValueError, match="no 'theta_0' rows"):
        e2.layer_verdicts(swaps[swaps.donor != e2.RESET], cells)


def _depth_swaps(source: list[float], reset: list[float], seeds=range(5), noise=0.02) -> pd.DataFrame:
    """Source-layer and theta_0-reset single-layer scores of one condition, a layer per entry
    (first to last), BN re-estimated."""
    rng = np.random.default_rng(1)
    n = len(source)
    return pd.DataFrame([{"architecture": "unet", "task": "segmentation", "pair": "a", "seed": s,
                          "donor": donor, "layer": f"l{i}", "index": i, "n_layers": n, "depth": i / (n - 1),
                          "bn_reestimated": True, "reuse_score": m + rng.normal(0, noise), "delta": 0.0}
                         for s in seeds for donor, means in (("source", source), (e2.RESET, reset))
                         for i, m in enumerate(means)])


def test_y2_is_judged_on_what_the_source_adds_over_its_reset():
    """A source whose scores fall with depth exactly as the theta_0 reset's do shows nothing about
    its kernels: the raw slope holds, Y2 must not. Where the reset stays flat, Y2 holds."""
    falling = [0.95, 0.8, 0.65, 0.5, 0.35, 0.2]
    cells = pd.DataFrame([{"architecture": "unet", "task": "segmentation", "pair": "a", "seed": s,
                           "usable": True} for s in range(5)])
    alike = _depth_swaps(falling, [m - 0.1 for m in falling])
    y2 = e2.yosinski_checks(alike, cells, None).set_index("check").loc["Y2"]
    assert y2.raw_verdict == "holds" and y2.raw_estimate < -0.8    # the source alone falls with depth
    assert y2.reset_estimate == pytest.approx(y2.raw_estimate, abs=0.1)  # and so does its reset
    assert y2.verdict != "holds" and abs(y2.estimate) < 0.5
    points = e2.minus_reset_points(alike)
    assert len(points) == 5 * 6 and points.minus_reset.mean() == pytest.approx(0.1, abs=0.01)
    flat = e2.yosinski_checks(_depth_swaps(falling, [0.1] * 6), cells, None).set_index("check").loc["Y2"]
    assert flat.verdict == "holds" and flat.estimate < -0.8
    (line,) = [x for x in e2.verdict_text(pd.DataFrame(), e2.yosinski_checks(alike, cells, None)).splitlines()
               if x.startswith("- Y2")]
    assert "of the source's r alone" in line and "of the theta_0 reset's r alone" in line
    no_reset = e2.yosinski_checks(alike[alike.donor == "source"], cells, None).set_index("check").loc["Y2"]
    assert no_reset.verdict == "undecided" and no_reset.raw_verdict == "holds"
