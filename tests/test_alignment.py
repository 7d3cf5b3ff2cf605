"""reuse.toolkit.alignment: permuting keeps the function; a permuted copy aligns back to distance 0;
weight matching equals a brute-force search where that is feasible."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from reuse.study.training.models import build_model
from reuse.toolkit.alignment import (
    COLUMNS,
    PermutationSpec,
    aligned_kernel_rmse,
    apply_permutation,
    permutation_spec,
    weight_matching,
)
from reuse.toolkit.criteria import find_layers

# (builder, input shape); BN statistics are randomised so a wrong BN permutation shows.
MODELS = {
    "unet": (lambda: build_model("unet", "segmentation", 2, 3, width=4, depth=2), (2, 2, 16, 16)),
    "pspnet": (lambda: build_model("pspnet", "segmentation", 2, 3, width=4, depth=3), (2, 2, 24, 24)),
    "plain": (lambda: build_model("plain", "autoencoder", 1, 1, width=4, depth=2), (2, 1, 16, 16)),
    "resnet18": (lambda: torchvision.models.resnet18(weights=None, num_classes=10), (1, 3, 32, 32)),
    "mobilenet_v3_small": (lambda: torchvision.models.mobilenet_v3_small(weights=None, num_classes=10),
                           (2, 3, 32, 32)),
}


def _model(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = MODELS[name][0]()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_()
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _random_perms(spec: PermutationSpec, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {g: torch.randperm(n, generator=generator) for g, n in spec.sizes.items()}


@pytest.mark.parametrize("name", list(MODELS))
def test_apply_permutation_keeps_the_function(name):
    model = _model(name)
    spec = permutation_spec(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    permuted = apply_permutation(spec, _random_perms(spec, 1), model)
    x = torch.randn(*MODELS[name][1], generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model(x)
        changed = [k for k in state if not torch.equal(state[k], permuted[k])]
        model.load_state_dict(permuted)
        got = model(x)
    assert len(changed) > len(spec.groups)          # the permutation did act
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    model.load_state_dict(state)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


@pytest.mark.parametrize("name", ["unet", "pspnet", "resnet18"])
def test_permuted_copy_aligns_to_zero(name):
    model = _model(name)
    spec = permutation_spec(model)
    source = apply_permutation(spec, _random_perms(spec, 3), model)
    table = aligned_kernel_rmse(model, source, model)
    # every layer kind (resnet18's Linear head too: its inputs follow the permuted channels)
    assert list(table.columns) == COLUMNS and len(table) == len(find_layers(model.state_dict()))
    permuted = table[table["permuted"]]
    assert len(permuted) >= len(table) - 1
    assert (permuted["rmse"] > 0).all()
    assert permuted["aligned_rmse"].max() <= 1e-12
    assert table["aligned_rmse"].max() <= 1e-12    # fixed heads follow their inputs back too
    assert table["rmse"].dtype == np.float64


def test_spec_of_this_repos_models_and_resnet():
    unet = permutation_spec(_model("unet"))
    assert {n for n, s in unet.layers.items() if not s.permuted} == {"head"}
    assert "output" in unet.layers["head"].reason
    # the decoder conv after the skip cat sees two blocks: the up-conv's and the skip's
    blocks = sorted((s.offset, s.size) for slots in unet.groups.values() for s in slots
                    if s.key == "up.1.conv.0.0.weight" and s.axis == 1)
    assert blocks == [(0, 4), (4, 4)]
    resnet = permutation_spec(_model("resnet18"))
    assert all(s.permuted for s in resnet.layers.values())
    # the residual adds tie conv1 with every layer1 block output (Git Re-Basin's spec)
    assert resnet.layers["layer1.1.conv2"].group == resnet.layers["conv1"].group == "conv1"
    fc = [s for s in resnet.groups["layer4.0.conv2"] if s.key == "fc.weight"]
    assert fc == [(fc[0].key, 1, 0, 512, 1)]


def test_ops_not_modelled_leave_layers_fixed_with_reason():
    class Viewed(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3)
            self.fc = nn.Linear(4 * 4 * 4, 2)

        def forward(self, x):
            return self.fc(self.b(self.a(x)).view(x.shape[0], -1))

    spec = permutation_spec(Viewed())
    assert spec.layers["a"].permuted and not spec.layers["b"].permuted
    assert "view" in spec.layers["b"].reason and list(spec.groups) == ["a"]

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 2, 1)

        def forward(self, x):
            y = self.a(x)
            return y * 2 if y.sum() > 0 else y

    with pytest.raises(ValueError, match="cannot trace Branchy"):
        permutation_spec(Branchy())


def test_weight_matching_equals_brute_force_for_one_group():
    """One hidden group of 5 channels: the best permutation by exhaustive search over all
    5! orders of sum <W_T, P W_S> equals the one found by weight matching."""
    def net(seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(2, 5, 3), nn.ReLU(), nn.Conv2d(5, 3, 3))

    source, target = net(0).state_dict(), net(1).state_dict()
    spec = permutation_spec(net(0))
    assert list(spec.sizes.values()) == [5]
    found = weight_matching(spec, source, target)["0"].tolist()

    def score(perm):
        p = list(perm)
        s = {k: v.double() for k, v in source.items()}
        t = {k: v.double() for k, v in target.items()}
        return float((t["0.weight"] * s["0.weight"][p]).sum() + (t["0.bias"] * s["0.bias"][p]).sum()
                     + (t["2.weight"] * s["2.weight"][:, p]).sum())

    best = max(itertools.permutations(range(5)), key=score)
    assert found == list(best)


def test_weight_matching_is_deterministic_and_inputs_untouched():
    a, b = _model("pspnet", 0), _model("pspnet", 1)
    spec = permutation_spec(a)
    before = {k: v.clone() for k, v in a.state_dict().items()}
    p1 = weight_matching(spec, a, b, seed=4)
    p2 = weight_matching(spec, a.state_dict(), b.state_dict(), seed=4)
    assert all(torch.equal(p1[g], p2[g]) for g in spec.groups)
    assert all(torch.equal(v, a.state_dict()[k]) for k, v in before.items())
    table = aligned_kernel_rmse(a, a, b)
    assert (table["aligned_rmse"].sum() < table["rmse"].sum())


def test_bad_permutations_and_states_are_rejected():
    model = _model("plain")
    spec = permutation_spec(model)
    group = next(iter(spec.groups))
    with pytest.raises(ValueError, match="not a permutation"):
        apply_permutation(spec, {group: torch.zeros(spec.sizes[group], dtype=torch.long)}, model)
    with pytest.raises(ValueError, match="unknown group"):
        apply_permutation(spec, {"nope": torch.arange(2)}, model)
    with pytest.raises(ValueError, match="missing"):
        weight_matching(spec, {"x": torch.zeros(1)}, model)
    with pytest.raises(TypeError, match="nn.Module"):
        permutation_spec(model.state_dict())



def _conv_distance(spec: PermutationSpec, source, target) -> float:
    """Summed squared distance of every conv kernel."""
    return sum(float((source[f"{n}.weight"].double() - target[f"{n}.weight"].double()).square().sum())
               for n in spec.layers)


@pytest.mark.parametrize("name", ["unet", "pspnet"])
def test_shared_init_keeps_the_identity_whatever_the_bn_statistics(name):
    """Two models from one theta_0, one with slightly moved conv kernels and very different
    BN running statistics (as after training on other data): the statistics do not drive
    the matching, so no channel moves and the summed squared conv distance does not rise."""
    target = _model(name).state_dict()
    generator = torch.Generator().manual_seed(5)
    source = {k: v.clone() for k, v in target.items()}
    for key, value in source.items():
        if key.endswith("running_var"):
            value.mul_(torch.empty(value.shape).uniform_(0.05, 20.0, generator=generator))
        elif key.endswith("running_mean"):
            value.add_(5 * torch.randn(value.shape, generator=generator))
        elif value.ndim == 4:
            value.add_(0.05 * value.std() * torch.randn(value.shape, generator=generator))
    spec = permutation_spec(_model(name))
    perms = weight_matching(spec, source, target)
    assert all(torch.equal(p, torch.arange(len(p))) for p in perms.values())
    aligned = apply_permutation(spec, perms, source)
    assert _conv_distance(spec, aligned, target) <= _conv_distance(spec, source, target)


def test_matching_that_would_raise_the_conv_distance_keeps_the_identity():
    """BN weights and biases enter the cost; where they alone pull the channels apart, the
    matched permutation would move kernels that already agree: the identity is kept."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 1, 3))
    target = model.state_dict()
    source = {k: v.clone() for k, v in target.items()}
    source["1.weight"] = 100 * torch.arange(4.0)
    target["1.weight"] = 100 * torch.arange(4.0).flip(0)
    spec = permutation_spec(model)
    perms = weight_matching(spec, source, target)
    assert torch.equal(perms["0"], torch.arange(4))
    assert _conv_distance(spec, apply_permutation(spec, perms, source), target) == 0


def test_a_head_of_another_size_is_ignored_and_the_rest_still_aligns():
    """A stranger with another number of classes (digits' 11 outputs against 3): its head
    cannot enter the cost, so it is ignored; the permuted trunk is still recovered, and
    without ``ignore`` the mismatch is an error naming the key."""
    target = _model("unet").state_dict()
    spec = permutation_spec(_model("unet"))
    hidden = _random_perms(spec, 3)
    source = apply_permutation(spec, hidden, target)
    source["head.weight"] = torch.randn(11, *source["head.weight"].shape[1:])
    source["head.bias"] = torch.randn(11)
    with pytest.raises(ValueError, match="head.weight"):
        weight_matching(spec, source, target)
    perms = weight_matching(spec, source, target, ignore=["head.weight", "head.bias"])
    aligned = apply_permutation(spec, perms, source)
    assert all(torch.equal(aligned[k], target[k]) for k in target if not k.startswith("head."))
