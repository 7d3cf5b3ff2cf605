"""The reuse rule: decide (one unit, from its evidence), select_layers (two states), and every
caller of the study deciding through it."""

import math

import pandas as pd
import pytest
import torch
import torchvision

from reuse.study.training.models import build_model
from reuse.toolkit.criteria import conv_layers, kernel_keys
from reuse.toolkit.selection import decide, select_layers, swap_verdicts
from reuse.toolkit.verdicts import REUSABLE


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
    with pytest.raises(ValueError, match="same architecture"):
        select_layers(_state("unet"), _state("pspnet"), threshold=1.0)
    with pytest.raises(ValueError, match="threshold=-1"):
        select_layers(_state(), _state(), threshold=-1)
    with pytest.raises(ValueError, match="threshold=nan"):
        select_layers(_state(), _state(), threshold=math.nan)


def _resnet_pair(tmp_path):
    torch.manual_seed(0)
    target = torchvision.models.resnet18(weights=None, num_classes=3)
    source = _perturbed(target.state_dict(), 0.001)
    torch.save({"model": {f"module.{k}": v for k, v in source.items()}}, tmp_path / "source.pt")
    return tmp_path / "source.pt", target


def test_modules_and_paths_are_accepted(tmp_path):
    path, target = _resnet_pair(tmp_path)
    table, layers = select_layers(path, target, threshold=1.0)
    assert layers == [*conv_layers(target), "fc"] and conv_layers(path) == conv_layers(target)
    assert len(layers) == 21  # every layer kind by default: the convolutions and the Linear head
    assert kernel_keys(target, ["conv1", "fc"]) == ["conv1.weight", "fc.weight", "fc.bias"]
    with pytest.raises(ValueError, match="layer 'bn1' is not a layer of linear, conv1d"):
        kernel_keys(target, ["bn1"])
    with pytest.raises(ValueError, match="layer 'bn1' is not a layer of"):
        select_layers(path, target, ["bn1"], threshold=1.0)


def test_score_fn_checks_the_chosen_set_as_a_whole(tmp_path):
    path, target = _resnet_pair(tmp_path)
    source = torch.load(path)["model"]

    def score_fn(model):  # fails when conv1 and layer1.0.conv1 both come from the source
        s = model.state_dict()
        swapped = [torch.equal(s[f"{n}.weight"], source[f"module.{n}.weight"])
                   for n in ("conv1", "layer1.0.conv1")]
        return 0.1 if all(swapped) else 1.0

    table, layers = select_layers(path, target, threshold=1.0, score_fn=score_fn)
    assert len(layers) == 20 and "conv1" not in layers  # the first of two equal drops
    dropped = table.set_index("layer").loc["conv1"]
    assert not dropped.reuse and "dropped by the joint check" in dropped.reason
    log = table.attrs["joint_check"]
    assert list(log.passes) == [False, True] and log.dropped[1] == "conv1"
    assert target.training  # the user's module is left as it was


def test_one_decision_from_swap_evidence_and_the_criterion():
    """select_layers is the one decider: swap evidence (swap_verdicts) and the criterion
    are conditions of the same rule, and the table says which failed."""
    s = _state()
    t = _perturbed(s, 0.05)
    layers = conv_layers(s)[:3]
    scores = {layers[0]: [0.9, 0.95], layers[1]: [0.2, 0.3], layers[2]: [0.8, 0.85]}
    scans = pd.DataFrame([{"seed": seed, "set": "single", "layer": name, "reuse_score": v}
                          for name, values in scores.items() for seed, v in enumerate(values)])
    table, chosen = select_layers(s, t, layers, scans=scans, margin=0.5)
    assert chosen == [layers[0], layers[2]]
    assert table.set_index("layer").loc[layers[1], "reason"].startswith("not reused: single swap")
    assert table.swap_n.tolist() == [2, 2, 2]
    rel = table.rel_rmse.to_numpy()
    cut = float(sorted(rel)[0])  # only the closest layer passes the criterion
    both, chosen = select_layers(s, t, layers, scans=scans, margin=0.5, threshold=cut, use_relative=True)
    assert chosen == [name for name, r in zip(layers, rel) if r <= cut and name != layers[1]]
    assert select_layers(s, t, layers, scans=scans, network_reusable=False)[1] == []


# --- decide: the one rule, and every caller going through it ---------------------------
SEEDS = (0, 1, 2)
# per layer and role, one value per seed: layer a passes everything, layer b fails its swap
EVIDENCE = {"a": {"source": [0.9, 0.92, 0.94], "reset": [0.3, 0.35, 0.4], "positive": [0.95, 0.96, 0.97],
                  "negative": [0.05, 0.0, 0.1]},
            "b": {"source": [0.1, 0.15, 0.2], "reset": [0.3, 0.35, 0.4], "positive": [0.95, 0.96, 0.97],
                  "negative": [0.05, 0.0, 0.1]}}


def _series(layer: str, role: str) -> pd.Series:
    return pd.Series(EVIDENCE[layer][role], index=pd.Index(SEEDS, name="seed"), name="reuse_score")


def _long(names: dict[str, str], **extra) -> pd.DataFrame:
    """The evidence as scan rows, each role under the donor name a caller gives it."""
    return pd.DataFrame([{"seed": s, "donor": donor, "set": "single", "layer": layer, "reuse_score": v,
                          "delta": v - 1, **extra}
                         for layer, roles in EVIDENCE.items() for role, donor in names.items()
                         for s, v in zip(SEEDS, roles[role])])


def test_decide_joins_the_parts_and_gates_them():
    a = decide(_series("a", "source"), reset=_series("a", "reset"), positive=_series("a", "positive"),
               negative=_series("a", "negative"))
    assert (a["above_margin"], a["minus_reset_verdict"], a["reusable"], a["verdict"], a["controls"]) == \
        ("holds", "holds", "holds", "holds", "passed") and a["reuse"]
    assert decide(_series("a", "source"), reset=_series("a", "source") + 0.1)["verdict"] == "refuted"
    swapped = decide(_series("a", "source"), positive=_series("a", "negative"), negative=_series("a", "positive"))
    assert swapped["verdict"] == "undecided" and swapped["controls"].startswith("failed: positive control")
    assert decide([0.6])["verdict"] == "undecided" and decide([0.6], one_seed=True)["verdict"] == "holds"
    assert decide([0.4], one_seed=True)["verdict"] == "refuted"
    assert decide(criterion=0.2, threshold=0.1)["verdict"] == "refuted" and decide(criterion=0.1, threshold=0.1)["reuse"]
    assert decide(_series("a", "source"), network_reusable=False)["verdict"] == "refuted"
    with pytest.raises(ValueError, match="both or neither"):
        decide(_series("a", "source"), positive=_series("a", "positive"))
    with pytest.raises(ValueError, match="threshold=-1"):
        decide(threshold=-1)


def _callers() -> dict[str, pd.Series]:
    """Each caller's reuse call per layer (a, b) on :data:`EVIDENCE`."""
    from reuse.study.experiments import common
    from reuse.study.experiments import own_model as e6
    from reuse.study.experiments import pretrained_network as e7

    e12 = common.controlled_verdicts(_long({"source": "source", "reset": common.RESET, "positive": "twin",
                                            "negative": "different_init"}), ["layer"], REUSABLE)
    scans7 = _long({"source": "pretrained", "reset": "reset", "positive": "twin", "negative": "scratch"}, task="near")
    distances = pd.DataFrame({"task": "near", "layer": ["a", "b"], "donor": "pretrained", "rel_rmse": 0.1})
    e7_table = e7.layer_table(scans7, distances)
    with pytest.warns(UserWarning, match="one seed"):
        one = swap_verdicts(_long({"source": "source"})[lambda f: f.seed == 0])
    return {"E1/E2 controlled_verdicts": e12.set_index("layer").verdict == "holds",
            "E6 selection": e6.selection(_long({"source": "source", "positive": "twin",
                                                "negative": "different_init"})).set_index("layer").reusable,
            "E7 layer_table": e7_table.set_index("layer").verdict == "holds",
            "swap_verdicts (cnn-reuse analyze)": swap_verdicts(_long({"source": "source"})).set_index("layer").reusable,
            "swap_verdicts, one seed": one.set_index("layer").reusable}


def test_every_caller_decides_as_the_rule_does():
    """On the same evidence each caller reuses exactly the layers decide reuses (a, not b)."""
    expected = {"a": True, "b": False}
    for caller, reused in _callers().items():
        assert reused.to_dict() == expected, caller
    for layer, want in expected.items():
        assert decide(_series(layer, "source"), reset=_series(layer, "reset"), positive=_series(layer, "positive"),
                      negative=_series(layer, "negative"))["reuse"] == want


def test_every_caller_goes_through_decide(monkeypatch):
    """A contrary rule (decide refusing everything) changes every caller's call: none keeps a
    copy of the rule of its own."""
    from reuse.study.experiments import common
    from reuse.study.experiments import pretrained_network as e7
    from reuse.toolkit import selection

    real = selection.decide

    def refuse(*args, **kwargs):
        return {**real(*args, **kwargs), "reusable": "refuted", "verdict": "refuted", "reuse": False}

    for module in (selection, common, e7):
        monkeypatch.setattr(module, "decide", refuse)
    for caller, reused in _callers().items():
        assert not reused.any(), caller
    s = _state()  # E4's condition (b) and the joint check of E6 and cnn-reuse analyze
    assert selection.select_layers(s, s, threshold=1.0)[1] == []
    _, log = selection.check_joint(s, s, conv_layers(s)[:1], lambda m: 1.0, model=build_model(
        "unet", "segmentation", 1, 6, 4, 1))
    assert not log.passes.iloc[0]
