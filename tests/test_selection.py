"""select_layers: the two-condition rule on two states."""

import math

import pytest
import torch

from reuse.models import build_model
from reuse.selection import conv_layers, select_layers


def _state(arch: str = "unet", seed: int = 0, width: int = 4) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return build_model(arch, "segmentation", 1, 6, width, 1).state_dict()


def _perturbed(state: dict[str, torch.Tensor], scale: float, seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: v + scale * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v.clone()
            for k, v in state.items()}


@pytest.mark.parametrize("arch", ["unet", "pspnet", "plain"])
def test_model_against_itself_reuses_every_layer_with_rmse_zero(arch):
    s = _state(arch)
    table, layers = select_layers(s, s, threshold=0.0)
    assert layers == conv_layers(s) and len(layers) > 3
    assert (table.rmse == 0).all() and (table.rel_rmse == 0).all() and table.reuse.all()
    assert table.reason.str.startswith("reused").all()


def test_threshold_and_criterion_decide():
    s = _state()
    t = _perturbed(s, 0.01)
    t["head.weight"] = t["head.weight"] + 10.0  # one layer far from its source
    table, layers = select_layers(s, t, threshold=0.5, use_relative=True)
    assert "head" not in layers and len(layers) == len(table) - 1
    assert (table.criterion == "rel_rmse").all()
    reason = table.set_index("layer").loc["head", "reason"]
    assert reason.startswith("not reused: relative RMSE") and "> threshold 0.5" in reason


def test_not_reusable_network_reuses_nothing_and_says_why():
    s = _state()
    table, layers = select_layers(s, s, threshold=1.0, network_reusable=False)
    assert layers == [] and not table.reuse.any()
    assert table.reason.str.contains("network is not reusable").all()


def test_noise_floor_is_shown_per_layer():
    s = _state()
    t = _perturbed(s, 0.05)
    floor = select_layers(s, _perturbed(s, 0.01, seed=3), threshold=1.0)[0][["layer", "rmse"]]
    table, _ = select_layers(s, t, noise_floor=floor, threshold=1.0)
    assert table.noise_floor.notna().all() and (table.noise_floor < table.rmse).all()
    assert table.reason.str.contains("above retraining noise").all()
    with pytest.raises(ValueError, match="noise_floor needs columns"):
        select_layers(s, t, noise_floor=floor.rename(columns={"rmse": "x"}), threshold=1.0)


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="same architecture trained from a shared initialisation"):
        select_layers(_state("unet"), _state("pspnet"), threshold=1.0)
    with pytest.raises(ValueError, match="threshold=-1"):
        select_layers(_state(), _state(), threshold=-1)
    with pytest.raises(ValueError, match="threshold=nan"):
        select_layers(_state(), _state(), threshold=math.nan)
