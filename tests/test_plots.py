"""Plots draw what is finite and say so when nothing is: an all-NaN panel must not fail."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from reuse.study import plots  # noqa: E402


def _frame(measure: str, scores) -> pd.DataFrame:
    n = len(scores)
    return pd.DataFrame({"architecture": "unet", "task": "segmentation",
                         "pair": ["fashion-split"] * (n // 2) + ["fashion-to-digits"] * (n - n // 2),
                         "seed": range(n), "donor": "source", "measure": measure, "k": 1, "n_layers": 2,
                         "bn_reestimated": True, "param_type": "conv_weight", "index": 0,
                         "layer": "enc.0", "reuse_score": scores})


@pytest.mark.parametrize("draw, measure", [
    (lambda f: plots.network_reusability.layer_curves(f, 0.5), "prefix"),
    (lambda f: plots.network_reusability.reuse_scores(f, 0.5), "all_conv"),
    (lambda f: plots.network_reusability.parameter_types(f, {"reusable": 0.5}), "param_type"),
    (lambda f: plots.layer_selection.selected_layers(f, 0.5), "single"),
])
def test_an_all_nan_panel_is_left_out_and_all_nan_gives_a_note(draw, measure):
    one_panel_nan = _frame(measure, [0.2, 0.4, np.nan, np.nan])
    assert draw(one_panel_nan).axes  # drew the finite panel, did not raise
    nothing = draw(_frame(measure, [np.nan] * 4))
    assert any(plots.common.NO_SCORES in t.get_text() for ax in nothing.axes for t in ax.texts)


def test_the_same_runs_draw_the_same_figure_bits(tmp_path):
    """A committed figure must come back bit for bit from the same numbers: no random jitter."""
    runs = pd.DataFrame({"task": ["near"] * 6 + ["far"] * 6, "seed": list(range(3)) * 4,
                         "role": (["finetuned"] * 3 + ["scratch"] * 3) * 2, "chance": 0.5,
                         "accuracy": [1.0, 1.0, 0.99, 0.6, 0.62, 0.6, 0.9, 0.9, 0.91, 0.3, 0.31, 0.3]})
    drawn = []
    for seed, folder in ((0, tmp_path / "first"), (1, tmp_path / "again")):
        np.random.seed(seed)  # another global state each time: seaborn's stripplot jitter draws from it
        paths = plots.common.save_figure(plots.pretrained_network.accuracies(runs), "e7_accuracies", folder)
        drawn.append([path.read_bytes() for path in paths])
    assert drawn[0] == drawn[1]
