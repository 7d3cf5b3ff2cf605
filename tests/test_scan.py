"""reuse.toolkit.scan: swap scans, selection and the joint check on torchvision models."""

import copy
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from scipy import stats
from torch.optim.swa_utils import update_bn

from reuse.toolkit import scan, selection

N_CLASSES = 3


def _pair(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(source, target) from one init; the source's kernels nudged far enough to change scores."""
    torch.manual_seed(0)
    target = getattr(torchvision.models, name)(weights=None, num_classes=N_CLASSES).eval()
    source = copy.deepcopy(target)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.5 * p.std() * torch.randn_like(p) if p.numel() > 1 else 0)
    return source, target


def _data(n: int = 12):
    gen = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 32, 32, generator=gen), torch.randint(0, N_CLASSES, (n,), generator=gen)


def _by_hand(source, target, layers, x, y, bn_x=None) -> float:
    """Accuracy of the target with ``layers``' weight/bias copied from the source."""
    model = copy.deepcopy(target)
    with torch.no_grad():
        for name in layers:
            mine, theirs = model.get_submodule(name), source.get_submodule(name)
            mine.weight.copy_(theirs.weight)
            if mine.bias is not None:
                mine.bias.copy_(theirs.bias)
    if bn_x is not None and layers:
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
        update_bn([bn_x], model)  # torch's SWA utility: an independent BN re-estimate
    with torch.no_grad():
        return float((model.eval()(x).argmax(1) == y).double().mean())


@pytest.mark.parametrize("name, bn", [("resnet18", False), ("mobilenet_v3_small", True)])
def test_rows_equal_scoring_each_swapped_model_by_hand(name, bn):
    source, target = _pair(name)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    x, y = _data()
    bn_x = _data(8)[0] if bn else None
    layers = scan.check_layers(target.state_dict(), None)
    layers = layers if name == "resnet18" else layers[:5]
    frame = scan.swap_scan(source.state_dict(), target, scan.task_score_fn("classification", x, y),
                           layers=layers, bn_data=bn_x, chance=0.2)
    L = len(layers)
    assert list(frame.set) == ["single"] * L + ["prefix"] * L + ["suffix"] * L + ["all"]
    assert frame[frame.set == "prefix"].layers.iloc[2] == ";".join(layers[:3])
    assert frame[frame.set == "suffix"].layer.iloc[1] == f"{layers[-2]}..{layers[-1]}"
    target_score = _by_hand(source, target, [], x, y)
    for row in frame.itertuples():
        assert row.score == pytest.approx(_by_hand(source, target, row.layers.split(";"), x, y, bn_x))
        assert row.target_score == target_score and row.delta == pytest.approx(row.score - target_score)
        assert row.reuse_score == pytest.approx((row.score - 0.2) / (target_score - 0.2))
    assert frame.score.nunique() > 1  # the swaps do change the model
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())  # untouched


def test_paths_and_a_model_of_the_architecture(tmp_path):
    source, target = _pair("resnet18")
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "s.pt")
    torch.save(target.state_dict(), tmp_path / "t.pt")
    x, y = _data()
    blank = torchvision.models.resnet18(weights=None, num_classes=N_CLASSES)
    frame = scan.swap_scan(tmp_path / "s.pt", tmp_path / "t.pt", scan.task_score_fn("classification", x, y),
                           model=blank, sets=["single"], layers=["conv1", "layer4.1.conv2"])
    expected = [_by_hand(source, target, [n], x, y) for n in ("conv1", "layer4.1.conv2")]
    assert frame.score.tolist() == pytest.approx(expected) and frame.reuse_score.isna().all()
    with pytest.raises(ValueError, match="model=None needs the target as an nn.Module"):
        scan.swap_scan(tmp_path / "s.pt", tmp_path / "t.pt", len)
    with pytest.raises(ValueError, match="sets=\\['middle'\\]; allowed"):
        scan.swap_scan(source, target, len, sets=["middle"])
    with pytest.raises(ValueError, match="architectures differ"):
        scan.swap_scan(source, target, len, model=torchvision.models.resnet34(num_classes=N_CLASSES))
    with pytest.raises(TypeError, match="score_fn returned str"):
        scan.swap_scan(source, target, lambda m: "high", sets=["all"])


def test_task_score_fn_and_chance():
    x, y = _data()
    with pytest.raises(ValueError, match="task='ranking'; allowed: classification"):
        scan.task_score_fn("ranking", x, y)
    with pytest.raises(ValueError, match="x has 12 samples and y 3"):
        scan.task_score_fn("classification", x, y[:3])
    with pytest.raises(ValueError, match="n_outputs=None; segmentation needs"):
        scan.task_score_fn("segmentation", x, y)
    assert scan.chance("classification", torch.tensor([1, 1, 0]), torch.tensor([1, 0, 0, 0])) == 0.25


def _scan_frame(values: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame({"set": "single", "layer": list(values), "reuse_score": list(values.values())})


def test_select_with_one_seed_warns_and_uses_the_point_estimate():
    one = _scan_frame({"a": 0.9, "b": 0.4})
    with pytest.warns(UserWarning, match="one seed.*point estimate.*without a confidence interval"):
        out = selection.swap_verdicts(one, margin=0.5)
    assert out.reusable.tolist() == [True, False] and out.ci_low.isna().all()
    assert (out.basis == "point estimate (1 seed)").all()


def test_select_over_seeds_uses_the_student_t_ci():
    seeds = [_scan_frame({"a": a, "b": b}) for a, b in [(0.9, 0.6), (0.8, 0.2), (0.85, 0.7)]]
    out = selection.swap_verdicts(seeds, margin=0.5).set_index("layer")
    for layer, values in {"a": [0.9, 0.8, 0.85], "b": [0.6, 0.2, 0.7]}.items():
        v = np.array(values)
        half = stats.t.ppf(0.975, 2) * v.std(ddof=1) / math.sqrt(3)
        assert out.loc[layer, "ci_low"] == pytest.approx(v.mean() - half)
        assert out.loc[layer, "n"] == 3
    assert out.reusable.tolist() == [True, False]  # b's mean 0.5 > margin is not enough
    with pytest.raises(ValueError, match="pass value='relative'"):
        selection.swap_verdicts(_scan_frame({"a": math.nan}))
    with pytest.raises(TypeError, match="scans is a dict"):
        selection.swap_verdicts({"a": 1})


def test_check_joint_backs_off_when_the_union_fails():
    source, target = _pair("mobilenet_v3_small")
    layers = scan.check_layers(target.state_dict(), None)[:4]
    bad = {layers[1], layers[3]}  # each passes alone; swapped together they fail

    def score_fn(model):
        s = model.state_dict()
        swapped = {n for n in layers if torch.equal(s[f"{n}.weight"], source.state_dict()[f"{n}.weight"])}
        return 0.1 if bad <= swapped else 0.9 - 0.01 * len(swapped)

    kept, log = selection.check_joint(source, target, layers, score_fn, chance=0.0)
    assert kept == [layers[0], layers[2], layers[3]]  # dropping layers[1] scores highest (first tie)
    assert log.passes.tolist() == [False, True] and log.dropped[1] == layers[1] and pd.isna(log.dropped[0])
    assert log.reuse_score.tolist() == pytest.approx([0.1 / 0.9, 0.87 / 0.9])
    kept, log = selection.check_joint(source, target, [layers[0], layers[1]], score_fn)
    assert kept == [layers[0], layers[1]] and len(log) == 1 and log.passes[0]


def test_check_joint_refuses_a_chance_the_target_does_not_beat():
    source, target = _pair("mobilenet_v3_small")
    with pytest.raises(ValueError, match="not above chance=0.5: no reuse score; pass chance=None"):
        selection.check_joint(source, target, ["features.0.0"], lambda m: 0.4, chance=0.5)
