import math

import numpy as np
import pytest
import torch

from reuse.criteria import kernel_rmse, per_kernel_rmse
from reuse.models import build_model, conv_layer_names


def _states(seed_a=0, seed_b=1):
    torch.manual_seed(seed_a)
    a = build_model("unet", "segmentation", 1, 3, 4, 2)
    torch.manual_seed(seed_b)
    b = build_model("unet", "segmentation", 1, 3, 4, 2)
    return a, b


def test_identical_models_have_zero_rmse():
    a, _ = _states()
    layers = conv_layer_names(a)
    table = kernel_rmse(a.state_dict(), a.state_dict(), layers)
    assert (table.rmse == 0).all() and (table.rel_rmse == 0).all()
    assert list(table.layer) == layers


def test_hand_computed_pair():
    s = {"c.weight": torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])}
    t = {"c.weight": torch.tensor([[[[1.0, 0.0], [3.0, 0.0]]]])}
    row = kernel_rmse(s, t, ["c"]).iloc[0]
    assert row.rmse == pytest.approx(math.sqrt((4 + 16) / 4))
    assert row.rel_rmse == pytest.approx(math.sqrt(5) / math.sqrt((1 + 9) / 4))
    assert row.n_weights == 4


def test_bulk_matches_a_per_layer_loop():
    a, b = _states()
    layers = conv_layer_names(a)
    table = kernel_rmse(a.state_dict(), b.state_dict(), layers)
    for name, rmse in zip(layers, table.rmse):
        wa, wb = a.state_dict()[f"{name}.weight"].double(), b.state_dict()[f"{name}.weight"].double()
        assert rmse == pytest.approx(float(((wa - wb) ** 2).mean().sqrt()), rel=1e-12)


def test_per_kernel_rmse_averages_back_to_the_layer():
    a, b = _states()
    layers = conv_layer_names(a)
    transposed = [n for n in layers if n.endswith(".up")]
    per = per_kernel_rmse(a.state_dict(), b.state_dict(), layers, transposed)
    table = kernel_rmse(a.state_dict(), b.state_dict(), layers).set_index("layer")
    for name, group in per.groupby("layer"):
        # equal-sized kernels: the layer's MSE is the mean of the kernels' MSEs
        assert np.sqrt((group.rmse ** 2).mean()) == pytest.approx(table.loc[name, "rmse"])
    assert per[per.layer == "up.0.up"].kernel.nunique() == a.up[0].up.out_channels


def test_mismatch_raises():
    a, _ = _states()
    wide = build_model("unet", "segmentation", 1, 3, 8, 2)
    with pytest.raises(ValueError, match="layer down.0.0.0"):
        kernel_rmse(a.state_dict(), wide.state_dict(), conv_layer_names(a))
    with pytest.raises(ValueError, match="nope"):
        kernel_rmse(a.state_dict(), a.state_dict(), ["nope"])
