"""reuse.study.experiments.pretrained_network: MTCNN's real ONet weights, offline data, the
runs, the measurements and the verdicts of notebook 07 on tiny inputs."""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from reuse.__main__ import main as reuse_cli
from reuse.study.config import get_profile
from reuse.study.experiments import pretrained_network as e7

TINY = dataclasses.replace(get_profile("smoke").pretrained, n_train={"near": 10, "far": 20},
                           n_test={"near": 20, "far": 40}, steps=4, batch_size=5)


def test_theta_p_loads_strictly_into_the_mirrored_onet():
    state = e7.pretrained_state()
    assert set(state) == set(e7.ONet(2).state_dict())  # the bbox and landmark heads left out
    raw = torch.load(e7.weights_path(), weights_only=True)
    assert set(raw) - set(state) == set(e7.UNUSED)
    assert torch.equal(state["conv1.weight"], raw["conv1.weight"])
    assert state["conv1.weight"].shape == (32, 3, 3, 3) and state["conv4.weight"].shape == (128, 64, 2, 2)


def test_the_package_is_never_imported():
    code = ("import sys; from reuse.study.experiments import pretrained_network as e7; e7.pretrained_state(); "
            "print('facenet_pytorch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1) to cut the network")
def test_weights_and_both_datasets_load_without_a_network():
    """In a user namespace with no network interface: theta_P, lfw_subset and MNIST all load
    (they ship inside the installed wheels), so nothing is fetched at run time."""
    code = ("from reuse.study.experiments import pretrained_network as e7; e7.pretrained_state(); "
            "print(len(e7._raw('near')[0]), len(e7._raw('far')[0]))")
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True)
    if probe.returncode:
        pytest.skip("unprivileged user namespaces are not allowed here")
    out = subprocess.run(["unshare", "-rn", sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["200", "5000"]


def test_onet_is_a_classifier_of_48_px_rgb():
    with pytest.raises(ValueError, match="n_classes"):
        e7.ONet(1)
    assert e7.ONet(10)(torch.zeros(3, 3, 48, 48)).shape == (3, 10)


def test_finetune_start_is_theta_0_with_theta_p_everywhere_but_the_head():
    start, theta_0, p = e7.finetune_start(10, 3), e7.initial_state(10, 3), e7.pretrained_state()
    for k, v in start.items():
        expected = theta_0[k] if k in e7.HEAD else p[k]
        assert torch.equal(v, expected), k
    assert torch.equal(e7.initial_state(10, 3)["conv1.weight"], theta_0["conv1.weight"])  # one seed, one theta_0
    assert not torch.equal(e7.initial_state(10, 4)["conv1.weight"], theta_0["conv1.weight"])


def test_the_pretrained_face_head_knows_faces_before_fine_tuning():
    """The source is a real face classifier: zero-shot on lfw_subset it beats chance (0.5)."""
    assert e7.zero_shot(n_test=80) > 0.7
    with pytest.raises(ValueError, match="near"):
        e7.zero_shot("far")


@pytest.mark.parametrize("task, n_cls", [("near", 2), ("far", 10)])
def test_split_is_stratified_disjoint_and_seeded(task, n_cls):
    parts = e7.split(task, 1, 2 * n_cls, 4 * n_cls)
    assert parts["test"][0].shape == (4 * n_cls, 3, 48, 48)
    for name, (x, y) in parts.items():
        assert np.bincount(y.numpy(), minlength=n_cls).tolist() == [len(y) // n_cls] * n_cls, name
        assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0  # MTCNN's (255 x - 127.5) / 128
        assert torch.equal(x[:, 0], x[:, 2])  # grayscale repeated
    flat = {name: {v.numpy().tobytes() for v in x} for name, (x, _) in parts.items()}
    assert not flat["block0"] & flat["block1"] and not flat["test"] & flat["block0"]
    again = e7.split(task, 1, 2 * n_cls, 4 * n_cls)
    assert torch.equal(again["block1"][0], parts["block1"][0])
    assert not torch.equal(e7.split(task, 2, 2 * n_cls, 4 * n_cls)["block0"][0], parts["block0"][0])


def test_lfw_subset_is_faces_first():
    images, labels = e7._raw("near")
    assert images.shape == (200, 25, 25) and labels[:100].all() and not labels[100:].any()


@pytest.mark.parametrize("kwargs, match", [({"n_train": 3, "n_test": 4}, "multiples"),
                                           ({"n_train": 100, "n_test": 40}, "available")])
def test_split_refuses_bad_sizes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        e7.split("near", 0, **kwargs)


def test_bad_task_and_seed_are_named():
    with pytest.raises(ValueError, match="task='mid'"):
        e7.plans(TINY, "mid", 0)
    with pytest.raises(ValueError, match="seed=-1"):
        e7.plans(TINY, "near", -1)


@pytest.fixture(scope="module")
def trained():
    states, runs = e7.train(TINY, "near", (0, 1), "cpu")
    return states, runs


def test_train_gives_every_role_and_is_deterministic(trained):
    states, runs = trained
    assert sorted(states) == [(s, r) for s in (0, 1) for r in sorted(e7.ROLES)]
    assert set(runs.role) == set(e7.ROLES) and len(runs) == 6
    assert (runs[runs.role == "scratch"].start == "theta_0").all()
    again, runs2 = e7.train(TINY, "near", (0,), "cpu")
    for role in e7.ROLES:
        for k, v in again[(0, role)].items():
            assert torch.equal(v, states[(0, role)][k]), (role, k)
    # the fine-tuned run moved from its start, and its head started where scratch's did
    start = e7.finetune_start(2, 0)
    assert not torch.equal(states[(0, "finetuned")]["conv1.weight"], start["conv1.weight"])


def test_measurements_and_verdicts_have_their_shape(trained, tmp_path):
    states, runs = trained
    d = e7.kernel_distances(states, "near")
    assert set(d.donor) == set(e7.DONORS) and set(d.layer) == {"conv1", "conv2", "conv3", "conv4"}
    assert d[d.layer == "conv1"][e7.BASELINE].eq(0).all() and d[d.layer == "conv4"][e7.BASELINE].eq(1).all()
    scans = e7.swap_scans(states, TINY, "near", "cpu")
    src = scans[scans.donor == "pretrained"]
    assert set(src.set) == set(TINY.source_sets) and not (scans.layers.str.contains("dense")).any()
    table = e7.verdicts(runs, scans, d)
    assert set(table.verdict) <= {"holds", "refuted", "undecided"}
    assert len(table) == 2 + 4 + 2 + 1  # controls, V1 per layer, V2 per criterion, V3
    ckpts = e7.save_checkpoints(states, "near", tmp_path)
    assert set(ckpts.role) == set(e7.ROLES)
    out = tmp_path / "analyze"
    assert reuse_cli(e7.analyze_argv(ckpts, "near", 0, out)) == 0
    # the wheel's onet.pt against the fine-tuned copy: its box and landmark heads do not pair
    layers = pd.read_csv(out / "layers.csv")
    assert list(layers.layer) == ["conv1", "conv2", "conv3", "conv4", "dense5", "dense6_1"]
    unmatched = pd.read_csv(out / "unmatched.csv")
    assert set(unmatched.source_layer) == {"dense6_2", "dense6_3"} and set(unmatched.reason) == {"only in source"}
    assert json.loads((out / "analyze.json").read_text())["summary"]["relation"] == "fine-tuned"


def _scans(src: dict, twin: float, scratch: float, reset: dict, seeds=range(5)) -> pd.DataFrame:
    """Hand-made single-layer scans of one task: per layer, theta_P's and the reset's scores."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in seeds:
        for layer in src:
            for donor, value in (("pretrained", src[layer]), ("reset", reset[layer]), ("twin", twin),
                                 ("scratch", scratch)):
                rows.append({"task": "far", "seed": seed, "donor": donor, "set": "single", "layer": layer,
                             "reuse_score": value + rng.normal(0, 0.01)})
    return pd.DataFrame(rows)


def _distances(rel: dict, seeds=range(5)) -> pd.DataFrame:
    rows = [{"task": "far", "seed": s, "donor": donor, "layer": layer, "index": i, "rmse": r / 10,
             "rel_rmse": r, "depth": i / (len(rel) - 1)}
            for s in seeds for i, (layer, r) in enumerate(rel.items()) for donor in ("pretrained", "twin")]
    return pd.DataFrame(rows)


def _runs(ft: float, scratch: float, seeds=range(5)) -> pd.DataFrame:
    return pd.DataFrame([{"task": "far", "seed": s, "role": role, "accuracy": acc + 0.001 * s, "chance": 0.1,
                          "plateaued": True}
                         for s in seeds for role, acc in (("finetuned", ft), ("twin", ft), ("scratch", scratch))])


def test_verdicts_by_hand():
    """conv1 and conv3 keep the margin, conv3 no better than its reset (so undecided: the
    difference's CI straddles 0); conv2 and conv4 fall.
    The relative RMSE is largest where the swap falls (rho < 0), but not in depth order."""
    src = {"conv1": 0.95, "conv2": 0.2, "conv3": 0.7, "conv4": 0.1}
    reset = {"conv1": 0.1, "conv2": 0.0, "conv3": 0.7, "conv4": 0.0}
    rel = {"conv1": 0.1, "conv2": 0.8, "conv3": 0.3, "conv4": 0.9}
    table = e7.verdicts(_runs(0.9, 0.8), _scans(src, 0.98, 0.05, reset), _distances(rel)).set_index("judgment")
    v = table.verdict
    assert v["E7 far: single swaps, positive control"] == "holds"
    assert v["E7 far: single swaps, negative control"] == "refuted"
    assert [v[f"E7 far: V1 {layer} could have stayed frozen"] for layer in src] == \
        ["holds", "refuted", "undecided", "refuted"]
    assert v["E7 far: V2 rel_rmse ranks layers like the swap scan"] == "holds"
    assert v["E7 far: V3 pretraining beats a fresh initialisation"] == "holds"
    # the relative RMSE grows with the harm but not with depth: its -rho beats depth's
    assert table.minus_baseline_estimate["E7 far: V2 rel_rmse ranks layers like the swap scan"] > 0
    scans = _scans(src, 0.98, 0.05, reset)
    text = e7.findings(table.reset_index(), _runs(0.9, 0.8), e7.layer_table(scans, _distances(rel)), scans)
    assert "could have stayed frozen (V1): conv1." in text and "V3: fine-tuned 0.902 vs scratch 0.802" in text
    # a failed positive control makes every claim that rests on single swaps undecided
    failed = e7.verdicts(_runs(0.9, 0.8), _scans(src, 0.3, 0.05, reset), _distances(rel)).set_index("judgment")
    assert failed.verdict["E7 far: V1 conv1 could have stayed frozen"] == "undecided"
    assert failed.controls["E7 far: V1 conv1 could have stayed frozen"].startswith("failed: positive control")
    assert failed.verdict["E7 far: V3 pretraining beats a fresh initialisation"] == "holds"  # no swap in it


def test_v2_judges_per_seed_correlations_on_fisher_z_and_says_on_how_many_seeds():
    """Per-seed -rho of 1, 1, 0.8, -0.6, 1: a t interval on the values would reach 1.5; on
    the z scale it stays in [-1, 1]. The difference to depth's rho is clipped to [-2, 2]."""
    src = {"conv1": 0.95, "conv2": 0.2, "conv3": 0.7, "conv4": 0.1}
    orders = [(0.1, 0.8, 0.3, 0.9)] * 2 + [(0.1, 0.9, 0.3, 0.8), (0.8, 0.1, 0.9, 0.3), (0.1, 0.8, 0.3, 0.9)]
    distances = pd.concat([_distances(dict(zip(src, rel)), seeds=[s]) for s, rel in enumerate(orders)])
    table = e7.verdicts(_runs(0.9, 0.8), _scans(src, 0.98, 0.05, src), distances).set_index("judgment")
    row = table.loc["E7 far: V2 rel_rmse ranks layers like the swap scan"]
    rhos = e7.rank_correlations(_scans(src, 0.98, 0.05, src), distances)
    minus = -rhos[rhos.column == "rel_rmse"].rho
    assert sorted(minus.round(6)) == [-0.6, 0.8, 1.0, 1.0, 1.0] and row.n == 5
    assert np.mean(minus) + 2.7764451051977987 * np.std(minus, ddof=1) / np.sqrt(5) > 1  # what a t interval did
    assert -1 <= row.ci_low <= row.estimate <= row.ci_high <= 1
    assert -2 <= row.minus_baseline_ci_low <= row.minus_baseline_ci_high <= 2
    assert "over 5 seeds" in e7.findings(table.reset_index(), _runs(0.9, 0.8), e7.layer_table(
        _scans(src, 0.98, 0.05, src), distances))


def test_a_seed_near_chance_is_excluded_and_listed():
    runs = _runs(0.9, 0.8)
    runs.loc[(runs.seed == 4) & (runs.role == "finetuned"), "accuracy"] = 0.15
    src = {"conv1": 0.95, "conv2": 0.2, "conv3": 0.7, "conv4": 0.1}
    table = e7.verdicts(runs, _scans(src, 0.98, 0.05, src), _distances(dict(zip(src, (0.1, 0.8, 0.3, 0.9)))))
    assert (table.n == 4).all()
    assert e7.excluded(runs)[0].startswith("- Excluded far seed 4")


def test_missing_distribution_is_named(monkeypatch):
    monkeypatch.setattr(e7, "DISTRIBUTION", "no-such-distribution-e7")
    with pytest.raises(FileNotFoundError, match="requirements-nodeps.lock"):
        e7.weights_path()
