"""E2: the layer positions, the selection rule, first k, the Yosinski checks and the frames."""


import numpy as np
import pandas as pd
import pytest

from reuse.config import get_profile
from reuse.experiments import layer_selection as e2


def test_layer_points_spread_from_first_to_last():
    assert e2.layer_points(13, 3) == [0, 6, 12]
    assert e2.layer_points(5, None) == [0, 1, 2, 3, 4] == e2.layer_points(5, 9)
    assert e2.layer_points(8, 1) == [0]
    with pytest.raises(ValueError, match="points=0"):
        e2.layer_points(8, 0)


def _swaps(scores: dict[str, list[list[float]]]) -> pd.DataFrame:
    """pair -> per layer, per seed scores (architecture unet, task seg)."""
    rows = []
    for pair, layers in scores.items():
        n = len(layers)
        for index, values in enumerate(layers):
            for seed, r in enumerate(values):
                rows.append({"architecture": "unet", "task": "seg", "pair": pair, "seed": seed,
                             "layer": f"l{index}", "index": index, "n_layers": n,
                             "depth": index / (n - 1), "bn_reestimated": False, "reuse_score": r})
    return pd.DataFrame(rows)


def test_select_uses_the_ci_lower_end_and_first_k_the_leading_run():
    swaps = _swaps({"fashion-split": [[0.95, 0.96, 0.97], [0.9, 0.92, 0.91], [0.99, 0.3, 0.98],
                                      [0.95, 0.95, 0.96]],
                    "fashion-to-digits": [[0.95, 0.96, 0.97], [0.2, 0.3, 0.25], [0.9, 0.9, 0.91],
                                          [0.95, 0.95, 0.96]]})
    sel = e2.select(swaps, 0.8)
    split = sel[sel.pair == "fashion-split"].set_index("layer").reusable
    assert list(split) == [True, True, False, True]  # l2 is noisy: its CI reaches below 0.8
    assert int(e2.first_k(sel).k.iloc[0]) == 1  # l1 fails on digits
    assert int(e2.first_k(sel[sel.pair == "fashion-split"]).k.iloc[0]) == 2
    table = e2.selection_table(sel)
    assert list(table.n_reusable) == [3, 3] and set(table.k) == {1}


def test_yosinski_checks_hold_and_fail_on_constructed_data():
    decreasing = [[1.0 - 0.15 * i + 0.01 * s for s in range(3)] for i in range(6)]
    far = [[v - 0.05 * (i + 1) for v in layer] for i, layer in enumerate(decreasing)]
    swaps = _swaps({"fashion-split": decreasing, "fashion-to-digits": far})
    gains = pd.DataFrame([{"architecture": "unet", "task": "seg", "pair": "fashion-split", "seed": s,
                           "layer": "l0", "set": "single", "mode": m, "gain": g * (1 + 0.1 * s)}
                          for s in range(3) for m, g in (("frozen", -0.1), ("finetuned", 0.05))])
    checks = e2.yosinski_checks(swaps, gains, 0.8).set_index("check")
    assert (checks.verdict == "holds").all() and list(checks.index) == ["Y1", "Y2", "Y3", "Y4"]
    flipped = _swaps({"fashion-split": far[::-1], "fashion-to-digits": decreasing[::-1]})
    checks = e2.yosinski_checks(flipped, gains.assign(gain=-gains.gain), 0.8).set_index("check")
    assert (checks.verdict == "does not hold").all()
    assert "Y2 (transfer costs more" in e2.checks_text(checks.reset_index())
    assert any("least reusable" in s for s in e2.surprises(flipped, e2.select(flipped, 0.8)))


def test_settings_take_overrides_that_are_not_none():
    prof = get_profile("quick")
    s = e2.settings(e2.M2_SCALE, prof, points=None, fraction=0.5)
    assert s["fraction"] == 0.5 and s["points"] == e2.M2_SCALE["quick"]["points"]
    with pytest.raises(ValueError, match="unknown settings"):
        e2.settings(e2.M2_SCALE, prof, bogus=1)


def test_e2_frames_are_tidy(runner_profile):
    runner, profile = runner_profile
    pairs = ["fashion-split", "fashion-to-digits"]
    swaps = e2.swap_scores(runner, profile, ["unet"], ["autoencoder"], pairs)
    n = int(swaps.n_layers.iloc[0])
    assert len(swaps) == 2 * 2 * n and set(swaps.bn_reestimated) == {False, True}
    assert swaps.groupby("pair")["index"].apply(lambda s: sorted(set(s))).map(len).eq(n).all()
    gains = e2.init_gains(runner, profile, ["unet"], ["autoencoder"], pairs[:1], 0.25, points=2,
                          min_steps=4)
    assert set(gains["set"]) == {"single", "prefix"} and set(gains["mode"]) == {"frozen", "finetuned"}
    assert sorted(set(gains["index"])) == [0, n - 1] and (gains.n_T == 32).all()
    np.testing.assert_allclose(gains.gain, gains.value - gains.scratch_value)
    first = gains[gains["index"] == 0]  # layer 1 alone is layers 1..1: the same run
    assert first.groupby("mode").value.nunique().eq(1).all()
