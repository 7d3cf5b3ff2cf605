import copy
import math

import numpy as np
import pytest
import torch
import torchvision

from reuse.study.training.models import build_model, conv_layer_names
from reuse.toolkit.criteria import (
    KINDS,
    conv_layers,
    find_layers,
    kernel_keys,
    kernel_rmse,
    per_kernel_rmse,
    rmse_over_floor,
)


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


# --- torchvision models given as modules, state dicts or paths (issue 10) --------------
TORCHVISION = {"resnet18": torchvision.models.resnet18,
               "mobilenet_v3_small": torchvision.models.mobilenet_v3_small}


def _torchvision_pair(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Two models from one init, the second nudged (as source/target trained from theta_0)."""
    torch.manual_seed(0)
    a = TORCHVISION[name](weights=None, num_classes=3)
    b = copy.deepcopy(a)
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return a, b


def _numpy_criteria(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    rmse = np.sqrt(np.mean((a - b) ** 2))
    cosine = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    return rmse, rmse / np.sqrt(np.mean(b ** 2)), 1 - cosine


@pytest.mark.parametrize("name", list(TORCHVISION))
def test_torchvision_models_match_numpy(name, tmp_path):
    a, b = _torchvision_pair(name)
    torch.save({"state_dict": b.state_dict()}, tmp_path / "b.pt")
    table = kernel_rmse(a, tmp_path / "b.pt")  # a module and a checkpoint path, layers=None
    weighted = [k[:-7] for k, v in b.state_dict().items() if k.endswith(".weight") and v.ndim in (2, 4)]
    assert list(table.layer) == weighted and len(weighted) > 15  # the convolutions and the Linear head
    assert list(table.columns) == ["layer", "index", "n_weights", "rmse", "rel_rmse", "cosine_distance"]
    assert (table.dtypes[["rmse", "rel_rmse", "cosine_distance"]] == np.float64).all()
    for row in table.itertuples():
        wa = a.get_submodule(row.layer).weight.detach().numpy()
        wb = b.get_submodule(row.layer).weight.detach().numpy()
        expected = _numpy_criteria(wa, wb)
        assert (row.rmse, row.rel_rmse, row.cosine_distance) == pytest.approx(expected, rel=1e-9)
        assert row.n_weights == wa.size
    per = per_kernel_rmse(a.state_dict(), b, ["features.0.0" if name != "resnet18" else "conv1"])
    wa, wb = (m.state_dict()[f"{per.layer[0]}.weight"].double().numpy() for m in (a, b))
    assert per.rmse.to_numpy() == pytest.approx(np.sqrt(((wa - wb) ** 2).reshape(len(wa), -1).mean(1)))


def test_same_state_with_default_layers():
    a, _ = _torchvision_pair("resnet18")
    sd = a.state_dict()
    table = kernel_rmse(sd, sd, None)
    assert len(table) == 21 and table.layer.iloc[-1] == "fc" and (table.rmse == 0).all()
    assert len(kernel_rmse(sd, sd, conv_layers(sd))) == 20
    assert table.cosine_distance.to_numpy() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("name, layer", [("resnet18", "bn1"), ("mobilenet_v3_small", "features.0.1")])
def test_layers_without_a_kind_are_refused(name, layer):
    a, b = _torchvision_pair(name)
    with pytest.raises(ValueError, match=rf"layer '{layer}' is not a layer of linear, conv1d, conv2d, conv3d "
                                         r"\(weight ndim 1\); allowed: layers such as \["):
        kernel_rmse(a, b, [layer])


# --- layer kinds other than Conv2d (issue 20) ----------------------------------------------
def _kinds_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv1d(2, 4, 3), torch.nn.BatchNorm1d(4), torch.nn.Conv2d(4, 4, 1),
                               torch.nn.Conv3d(4, 2, 2), torch.nn.Flatten(), torch.nn.Linear(8, 3),
                               torch.nn.Linear(3, 2, bias=False))


def test_find_layers_tells_kinds_apart_by_weight_dimensions():
    m = _kinds_model()
    assert find_layers(m) == ["0", "2", "3", "5", "6"]
    assert [find_layers(m, [k]) for k in KINDS] == [["5", "6"], ["0"], ["2"], ["3"]]
    assert conv_layers(m) == ["2"] and find_layers(m, ("conv1d", "linear")) == ["0", "5", "6"]
    assert kernel_keys(m, ["0", "6"]) == ["0.weight", "0.bias", "6.weight"]
    with pytest.raises(ValueError, match=r"kinds=\['conv'\]; allowed: a non-empty list of linear, conv1d"):
        find_layers(m, ["conv"])
    with pytest.raises(ValueError, match="kinds=\\[\\]"):
        find_layers(m, [])


@pytest.mark.parametrize("kind", ["linear", "conv1d"])
def test_linear_only_and_conv1d_models_match_numpy(kind):
    """A model of one kind alone: every criterion equals a numpy computation, per layer and
    per output unit (dim 0 of a Linear or Conv1d weight)."""
    layer = (lambda i, o: torch.nn.Linear(i, o)) if kind == "linear" else (lambda i, o: torch.nn.Conv1d(i, o, 3))
    torch.manual_seed(0)
    a = torch.nn.Sequential(layer(6, 5), torch.nn.ReLU(), layer(5, 4))
    b = copy.deepcopy(a)
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.1 * torch.randn_like(p))
    table = kernel_rmse(a, b)
    assert list(table.layer) == ["0", "2"] and find_layers(a, [kind]) == ["0", "2"]
    for row in table.itertuples():
        wa, wb = (m.get_submodule(row.layer).weight.detach().numpy() for m in (a, b))
        assert (row.rmse, row.rel_rmse, row.cosine_distance) == pytest.approx(_numpy_criteria(wa, wb), rel=1e-9)
    per = per_kernel_rmse(a, b)
    assert len(per) == 5 + 4
    wa, wb = (m[0].weight.detach().double().numpy() for m in (a, b))
    assert per[per.layer == "0"].rmse.to_numpy() == pytest.approx(np.sqrt(((wa - wb) ** 2).reshape(5, -1).mean(1)))


def test_wrong_types_and_shapes_are_refused():
    a, b = _torchvision_pair("resnet18")
    with pytest.raises(TypeError, match="layers='conv1'"):
        kernel_rmse(a, b, "conv1")
    with pytest.raises(TypeError, match="layer 3 is a int"):
        kernel_rmse(a, b, [3])
    with pytest.raises(TypeError, match="source: got list"):
        kernel_rmse([1], b)
    wide = b.state_dict()
    wide["conv1.weight"] = torch.zeros(8, 3, 7, 7)
    with pytest.raises(ValueError, match=r"layer conv1: source weight \(64, 3, 7, 7\) vs target \(8, 3, 7, 7\)"):
        kernel_rmse(a, wide)


def test_rmse_over_floor_divides_by_the_twins_rmse_and_gives_nan_for_a_zero_floor():
    target = {"a.weight": torch.zeros(2, 1, 1, 1), "b.weight": torch.ones(2, 1, 1, 1)}
    source = {"a.weight": torch.full((2, 1, 1, 1), 3.0), "b.weight": torch.full((2, 1, 1, 1), 2.0)}
    twin = {"a.weight": torch.full((2, 1, 1, 1), 1.5), "b.weight": torch.ones(2, 1, 1, 1)}
    out = rmse_over_floor(source, target, twin)
    assert np.allclose(out.rmse, [3.0, 1.0]) and np.allclose(out.floor_rmse, [1.5, 0.0])
    assert out.rmse_over_floor[0] == pytest.approx(2.0) and math.isnan(out.rmse_over_floor[1])  # twin = target
