import pytest
import torch

from reuse.study.training.models import ARCHITECTURES, build_model, conv_layer_names
from reuse.toolkit import surgery
from reuse.toolkit.metrics import evaluate, reuse_score


def _pair(arch, seed_a=0, seed_b=1, width=4):
    torch.manual_seed(seed_a)
    a = build_model(arch, "segmentation", 1, 4, width, 2)
    torch.manual_seed(seed_b)
    b = build_model(arch, "segmentation", 1, 4, width, 2)
    for m, s in ((a, 2), (b, 3)):  # non-trivial BN statistics
        m.train()
        with torch.no_grad():
            m(torch.randn(8, 1, 32, 32) * s)
        m.eval()
    return a, b


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_self_swap_is_identity_with_r_one(arch):
    model, _ = _pair(arch)
    x, y = torch.randn(6, 1, 32, 32), torch.randint(0, 4, (6, 32, 32))
    swapped = surgery.swap(model, model, surgery.select_keys(model))
    assert torch.equal(swapped(x), model(x))
    m = evaluate(model, x, y, "segmentation", 4)["miou"]
    s = evaluate(swapped, x, y, "segmentation", 4)["miou"]
    assert reuse_score(s, m, chance=0.0) == 1.0


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_swapping_everything_reproduces_the_source(arch):
    source, target = _pair(arch)
    x = torch.randn(4, 1, 32, 32)
    swapped = surgery.swap(target, source, surgery.select_keys(target))
    assert torch.equal(swapped(x), source(x))
    assert not torch.equal(target(x), source(x))


def test_inputs_are_not_mutated():
    source, target = _pair("unet")
    before = {k: v.clone() for k, v in target.state_dict().items()}
    surgery.swap(target, source, surgery.select_keys(target))
    surgery.reestimate_bn(target, torch.randn(8, 1, 32, 32))
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


def test_select_by_layer_type_prefix_suffix():
    model, _ = _pair("unet")
    layers = conv_layer_names(model)
    keys = surgery.select_keys(model, surgery.prefix(layers, 2), surgery.KERNEL_TYPES)
    assert keys == [f"{layers[0]}.weight", f"{layers[1]}.weight"]  # convs feeding BN: no bias
    assert surgery.select_keys(model, surgery.suffix(layers, 1)) == ["head.weight", "head.bias"]
    means = surgery.select_keys(model, types=["bn_running_mean"])
    assert means and all(k.endswith("running_mean") for k in means)
    assert not any("num_batches_tracked" in k for k in surgery.select_keys(model))
    with pytest.raises(ValueError, match="unknown parameter types"):
        surgery.select_keys(model, types=["conv_wieght"])
    with pytest.raises(ValueError, match="unknown layers"):
        surgery.select_keys(model, ["down.9"])
    with pytest.raises(ValueError, match="k=99"):
        surgery.prefix(layers, 99)


def test_only_the_chosen_keys_change():
    source, target = _pair("pspnet")
    keys = surgery.select_keys(target, types=["conv_bias"])
    new = surgery.swap_state(target.state_dict(), source.state_dict(), keys)
    for k, v in new.items():
        expected = source.state_dict()[k] if k in keys else target.state_dict()[k]
        assert torch.equal(v, expected), k


def test_mismatched_architectures_raise_with_names():
    unet = build_model("unet", "segmentation", 1, 4, 4, 2)
    with pytest.raises(ValueError, match="only in target: down.0.0.0.weight"):
        surgery.swap(unet, build_model("pspnet", "segmentation", 1, 4, 4, 2), [])
    wide = build_model("unet", "segmentation", 1, 4, 8, 2)
    with pytest.raises(ValueError, match=r"shape of down.0.0.0.weight: target \(4, 1, 3, 3\) vs source \(8, 1, 3, 3\)"):
        surgery.swap(unet, wide, ["down.0.0.0.weight"])
    with pytest.raises(ValueError, match=r"shape of down.0.0.0.weight"):
        surgery.check_compatible(unet, wide)


def test_a_source_with_another_head_gives_every_other_layer():
    """Digits' 11 outputs against 5 classes: the trunk can be swapped, the head cannot."""
    target, other = build_model("unet", "segmentation", 1, 6, 4, 2), build_model("unet", "segmentation", 1, 11, 4, 2)
    out = surgery.swap_state(target.state_dict(), other.state_dict(), ["down.0.0.0.weight"])
    assert torch.equal(out["down.0.0.0.weight"], other.state_dict()["down.0.0.0.weight"])
    with pytest.raises(ValueError, match="shape of head.weight"):
        surgery.swap_state(target.state_dict(), other.state_dict(), ["head.weight"])


def test_reestimate_bn_matches_the_data_statistics():
    model, _ = _pair("unet")
    x = torch.randn(64, 1, 32, 32) * 2 + 1
    new = surgery.reestimate_bn(model, x, batch_size=64)
    conv, bn = new.down[0][0][0], new.down[0][0][1]
    with torch.no_grad():
        feat = conv(x)
    torch.testing.assert_close(bn.running_mean, feat.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.running_var, feat.var((0, 2, 3)), rtol=1e-3, atol=1e-5)
    assert bn.momentum == model.down[0][0][1].momentum and not new.training


def test_bad_inputs_are_refused_naming_the_value():
    source, target = _pair("unet")
    s, t = source.state_dict(), target.state_dict()
    layers = conv_layer_names(target)
    with pytest.raises(ValueError, match="types='conv_weight': a single string"):
        surgery.select_keys(target, types="conv_weight")
    with pytest.raises(ValueError, match="layers='head': a single string"):
        surgery.select_keys(target, "head")
    with pytest.raises(ValueError, match="k=1.5; allowed: an integer"):
        surgery.prefix(layers, 1.5)
    with pytest.raises(ValueError, match="k=True"):
        surgery.suffix(layers, True)
    key = f"{layers[0]}.weight"
    broken = dict(s, **{key: torch.full_like(s[key], float("nan"))})
    with pytest.raises(ValueError, match=f"NaN or inf values: \\['{key}'\\]"):
        surgery.swap_state(t, broken, [key])
    with pytest.raises(ValueError, match="keys='head.weight': a single string"):
        surgery.swap_state(t, s, "head.weight")
    with pytest.raises(ValueError, match="at least 2 input samples; got 0"):
        surgery.reestimate_bn(target, torch.zeros(0, 1, 32, 32))
    with pytest.warns(UserWarning, match="torch.float16 -> torch.float32"):
        out = surgery.swap_state(t, {k: v.half() if v.is_floating_point() else v for k, v in s.items()}, [key])
    assert out[key].dtype == torch.float32
