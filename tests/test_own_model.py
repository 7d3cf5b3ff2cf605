"""reuse.study.experiments.own_model: deterministic, cached ResNet-18 checkpoints on the right data."""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from scipy import stats

from reuse.study.config import get_profile
from reuse.study.training.data import CLASSIFICATION, FASHION_FILES, read_idx
from reuse.study.experiments import own_model as om
from reuse.study.training.models import build_model
from reuse.study.training.train import Runner
from reuse.toolkit.selection import swap_verdicts

TINY_OWN = dict(image_size=16, n_train=16, n_test=8, n_bn=4, steps=2, batch_size=8, n_seeds=1)


@pytest.fixture
def tiny(fake_fashion):
    prof = get_profile("smoke", [0])
    return dataclasses.replace(prof, own=dataclasses.replace(prof.own, **TINY_OWN))


def _runner(fake_fashion, cache=None):
    return Runner("cpu", cache, fake_fashion, progress=False)


def test_one_training_path_same_seed_same_state_dict_and_another_init_differs(tiny, fake_fashion):
    spec = om.specs(tiny, 0)["target"]
    a, b = _runner(fake_fashion).train(spec), _runner(fake_fashion).train(spec)
    assert a.state.keys() == b.state.keys()
    assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)
    theta_0 = _runner(fake_fashion).build(spec).state_dict()  # torchvision's resnet18, 5 classes
    assert theta_0.keys() == torchvision.models.resnet18(num_classes=5).state_dict().keys()
    assert not torch.equal(a.state["conv1.weight"], theta_0["conv1.weight"])  # it trained
    assert a.history and "accuracy" in a.history[-1]  # the one fit records its learning curve
    other = _runner(fake_fashion).train(om.specs(tiny, 0)["different_init"])
    assert not torch.equal(a.state["conv1.weight"], other.state["conv1.weight"])


def test_roles_share_theta_0_except_the_negative_control(tiny):
    s = om.specs(tiny, 3)
    assert set(s) == set(om.CHECKPOINT_ROLES)
    assert s["source"].init_seed == s["target"].init_seed == s["twin"].init_seed == 3
    assert s["different_init"].init_seed != 3
    assert (s["twin"].block, s["target"].block) == (1, 0)
    assert s["twin"].order_seed != s["target"].order_seed == s["different_init"].order_seed
    assert (s["source"].domain, s["target"].domain) == ("source", "target")
    assert {x.architecture for x in s.values()} == {"resnet18"} and {x.channels for x in s.values()} == {3}
    assert len({x.key for x in s.values()}) == 4
    before = torch.get_rng_state()  # architecture() leaves the caller's random state alone
    om.architecture()
    assert torch.equal(before, torch.get_rng_state())


def test_second_call_loads_the_cache_and_does_not_train(tiny, fake_fashion, tmp_path):
    first = om.checkpoints(_runner(fake_fashion, tmp_path / "cache"), tiny, tmp_path, roles=("source", "target"))
    assert not first.cached.any() and len(first) == 2
    for path in first.path:  # a plain state-dict file, loadable as a user would
        state = torch.load(path, weights_only=True)
        assert state["fc.weight"].shape == (5, 512)
        assert path.startswith(str(tmp_path / "own_model"))
    mtimes = [(p, os.stat(p).st_mtime_ns) for p in first.path]
    again = _runner(fake_fashion, tmp_path / "cache")
    second = om.checkpoints(again, tiny, tmp_path, roles=("source", "target"))
    assert again.trained == 0 and second.cached.all()
    assert list(second.path) == list(first.path)
    assert all(os.stat(p).st_mtime_ns == t for p, t in mtimes)
    assert not list((tmp_path / "own_model").glob(".*.tmp"))  # no temporary file left behind


def test_states_reads_each_checkpoint_file_once_and_names_a_missing_one(tmp_path, monkeypatch):
    paths = {}
    for seed, role in [(0, "source"), (0, "target"), (1, "target")]:
        paths[seed, role] = tmp_path / f"{role}{seed}.pt"
        torch.save({"conv.weight": torch.full((2, 1, 3, 3), float(seed))}, paths[seed, role])
    ckpts = pd.DataFrame([{"seed": s, "role": r, "path": str(p)} for (s, r), p in paths.items()])
    reads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **k: reads.append(str(f)) or real_load(f, *a, **k))
    states = om.states(ckpts)
    assert sorted(reads) == sorted(map(str, paths.values()))
    assert {s: sorted(r) for s, r in states.items()} == {0: ["source", "target"], 1: ["target"]}
    assert states[1]["target"]["conv.weight"].eq(1.0).all()
    paths[1, "target"].unlink()
    with pytest.raises(FileNotFoundError, match="target checkpoint of seed 1"):
        om.states(ckpts)


def test_target_is_classes_5_to_9_relabelled_0_to_4(fake_fashion):
    runner = _runner(fake_fashion)
    raw_x = read_idx(fake_fashion / FASHION_FILES[("train", "images")])
    raw_y = read_idx(fake_fashion / FASHION_FILES[("train", "labels")])
    # the fake images are distinct, so each picked image names its original class
    by_bytes = {img.tobytes(): int(c) for img, c in zip(raw_x, raw_y)}
    assert len(by_bytes) == len(raw_x)
    for side, offset in (("source", 0), ("target", 5)):
        x, y = runner.split(om.PAIR, side, CLASSIFICATION, "train", 1, n=40, image_size=32, channels=3)
        assert x.shape == (40, 3, 32, 32) and torch.equal(x[:, 0], x[:, 2])
        assert set(y.tolist()) <= set(range(5))
        # at 32 px the 28 px image is padded by 2, unchanged: undo that to find it
        originals = np.rint(x[:, 0, 2:30, 2:30].numpy() * 255).astype(np.uint8)
        classes = [by_bytes[img.tobytes()] for img in originals]
        assert classes == [int(c) + offset for c in y]


def test_twin_block_is_disjoint_from_the_target_block(fake_fashion):
    runner = _runner(fake_fashion)
    a, b = (runner.split(om.PAIR, "target", CLASSIFICATION, "train", 0, n=50, image_size=16, block=block)[0]
            for block in (0, 1))
    flat_a = {tuple(r.tolist()) for r in a[:, 0].flatten(1)}
    assert not any(tuple(r.tolist()) in flat_a for r in b[:, 0].flatten(1))


@pytest.mark.parametrize("call, match", [
    (lambda: om.specs(get_profile("smoke"), -2), "seed=-2"),
    (lambda: om.specs(get_profile("smoke"), 0)["target"].replace(steps=0), "steps=0"),
    (lambda: build_model("resnet18", "segmentation", 3, 5), "task 'classification'"),
    (lambda: build_model("unet", "classification", 1, 5), "task='classification'"),
    (lambda: om.checkpoints(None, get_profile("smoke"), ".", roles=("teacher",)), "teacher"),
])
def test_bad_parameters_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def _frames(twin_level: float, other_level: float):
    """Scans and distances of 3 seeds x 4 layers: the source's score falls as its RMSE grows;
    the controls' single and all-layer swaps near the given levels."""
    rng = np.random.default_rng(0)
    scans, dist = [], []
    for seed in range(3):
        for i, layer in enumerate(["a", "b", "c", "d", "a..d"]):
            set_name = "all" if i == 4 else "single"
            if set_name == "single":
                scans.append({"seed": seed, "donor": "source", "set": "single", "layer": layer,
                              "reuse_score": 1 - 0.2 * i})
                dist.append({"seed": seed, "comparison": "source", "layer": layer, "rel_rmse": 0.1 + 0.05 * i,
                             "rmse": 0.02 * (i + 1)})
                dist.append({"seed": seed, "comparison": "twin", "layer": layer, "rel_rmse": 0.1,
                             "rmse": 0.01 * (i + 1)})
            for donor, level in (("twin", twin_level), ("different_init", other_level)):
                scans.append({"seed": seed, "donor": donor, "set": set_name, "layer": layer,
                              "reuse_score": level + rng.normal(0, 0.02)})
    return pd.DataFrame(scans), pd.DataFrame(dist)


def test_verdicts_follow_the_controls():
    scans, dist = _frames(0.95, 0.05)
    joint = pd.DataFrame({"seed": [0, 1, 2], "n_selected": 3, "joint_reuse_score": [0.8, 0.7, 0.75],
                          "n_kept": 3})
    table = om.verdicts(scans, dist, joint).set_index("judgment")
    assert list(table.index) == list(om.JUDGMENTS)
    twin = scans[(scans.donor == "twin") & (scans.set == "single")].groupby("seed").reuse_score.mean().to_numpy()
    assert table.loc["single swaps, positive control", "estimate"] == pytest.approx(twin.mean())
    other_all = scans[(scans.donor == "different_init") & (scans.set == "all")].reuse_score.to_numpy()
    assert table.loc["joint swap, negative control", "estimate"] == pytest.approx(other_all.mean())
    assert table.loc[["single swaps, positive control", "joint swap, positive control"], "verdict"].tolist() \
        == ["holds", "holds"]
    assert table.loc[["single swaps, negative control", "joint swap, negative control"], "verdict"].tolist() \
        == ["refuted", "refuted"]
    half = stats.t.ppf(0.975, 2) * np.std([0.8, 0.7, 0.75], ddof=1) / np.sqrt(3)
    assert table.loc["selected set as a whole", "ci_low"] == pytest.approx(0.75 - half)
    assert table.loc["selected set as a whole", "verdict"] == "holds"
    # a perfect inverse ranking in every seed; on Fisher's z scale (|rho| clipped to 0.9999) it reads -0.9999
    assert table.loc["RMSE ranks layers", "estimate"] == pytest.approx(-1.0, abs=1e-4)
    text = om.findings(table.reset_index(), pd.DataFrame({"layer": list("abcd"), "reusable": [1, 1, 0, 0]}
                                                          ).astype({"reusable": bool}), joint, dist)
    assert "2.00x as far" in text  # source RMSE is twice the twin's in every layer
    # controls that fail leave the claims about the source undecided
    scans, dist = _frames(0.05, 0.05)
    table = om.verdicts(scans, dist, joint).set_index("judgment")
    assert table.loc["single swaps, positive control", "verdict"] == "refuted"
    assert table.loc[["selected set as a whole", "RMSE ranks layers"], "verdict"].tolist() == ["undecided"] * 2
    assert table.loc["selected set as a whole", "raw_verdict"] == "holds"


def test_selection_is_gated_by_the_single_swap_controls():
    """Where the different-init model's single swaps also pass, a passing source swap says
    nothing: no layer is selected and the table says why; with controls that behave, the
    selection is the swaps' own."""
    scans, dist = _frames(0.95, 0.05)
    chosen = om.selection(scans)
    source = scans[(scans.donor == "source") & (scans.set == "single")].drop(columns="donor")
    pd.testing.assert_frame_equal(chosen.drop(columns="raw_reusable"), swap_verdicts(source))
    assert chosen.reusable.tolist() == chosen.raw_reusable.tolist() == [True, True, True, False]
    scans, dist = _frames(0.95, 0.9)
    chosen = om.selection(scans)
    assert not chosen.reusable.any() and chosen.raw_reusable.tolist() == [True, True, True, False]
    assert set(chosen.basis) == {"undecided: controls failed (negative control holds)"}
    joint = pd.DataFrame({"seed": [0, 1, 2], "n_selected": 0, "joint_reuse_score": np.nan, "n_kept": 0})
    text = om.findings(om.verdicts(scans, dist, joint), chosen, joint, dist)
    assert "no layer is called reusable from the source: the 3 of 4 layers they would select" in text


def test_the_analyze_command_of_notebook_06_can_run_again_into_its_own_report(tiny, fake_fashion, tmp_path):
    """A rerun replaces the report its previous run wrote (the committed notebook had kept a
    stale one: exit code 2 without --force), and never a folder of someone else's."""
    from reuse.__main__ import main as reuse_cli

    ckpts = om.checkpoints(_runner(fake_fashion, tmp_path / "cache"), tiny, tmp_path)
    argv = om.analyze_argv(om.paths(ckpts, 0), tmp_path / "report")
    assert reuse_cli(argv) == 0 and reuse_cli(argv) == 0
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("mine")
    assert reuse_cli(om.analyze_argv(om.paths(ckpts, 0), tmp_path / "theirs")) == 2
    assert (tmp_path / "theirs" / "notes.txt").read_text() == "mine"
