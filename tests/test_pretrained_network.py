"""reuse.study.experiments.pretrained_network: MTCNN's real ONet weights, offline data, the
runs (RunSpecs through the runner and its cache), the measurements and the verdicts of
notebook 07 on tiny inputs."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from reuse.__main__ import main as reuse_cli
from reuse.study.training import pretrained, wheel_sets
from reuse.study.config import get_profile
from reuse.study.experiments import pretrained_network as e7
from reuse.study.training.models import ONet
from reuse.study.training.spec import RunSpec
from reuse.study.training.train import MONITOR_WHEEL, Runner

TINY = dataclasses.replace(get_profile("smoke").pretrained, n_train={"near": 10, "far": 20},
                           n_test={"near": 20, "far": 40}, steps=4, batch_size=5)


@pytest.fixture(scope="module")
def cache(fake_fashion_dir, tmp_path_factory):
    """A run cache for this module's runners, which read the fake Fashion-MNIST (every runner
    reads it; no E7 run trains on it)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("REUSE_DATA_DIR", str(fake_fashion_dir))
    yield tmp_path_factory.mktemp("e7_cache")
    mp.undo()


def _runner(cache):
    return Runner("cpu", cache, progress=False, threads=1)


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1) to cut the network")
def test_weights_and_both_datasets_load_without_a_network():
    """In a user namespace with no network interface: theta_P, lfw_subset and MNIST all load
    (they ship inside the installed wheels), so nothing is fetched at run time."""
    code = ("from reuse.study.training import pretrained, wheel_sets; pretrained.state('mtcnn-onet'); "
            "print(len(wheel_sets.arrays('lfw-faces')[0]), len(wheel_sets.arrays('mnist-5k')[0]))")
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True)
    if probe.returncode:
        pytest.skip("unprivileged user namespaces are not allowed here")
    out = subprocess.run(["unshare", "-rn", sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["200", "5000"]


def test_the_finetuned_start_is_theta_0_with_theta_p_everywhere_but_the_head(cache):
    runner = _runner(cache)
    s = e7.specs(TINY, "far", 3)
    start, theta_0, p = runner.initial_state(s["finetuned"]), runner.initial_state(s["scratch"]), \
        pretrained.state(e7.SOURCE)
    torch.manual_seed(3)
    fresh = ONet(10).state_dict()  # theta_0: ONet built under the seed, as the old route drew it
    assert all(torch.equal(v, fresh[k]) for k, v in theta_0.items())
    for k, v in start.items():
        assert torch.equal(v, theta_0[k] if k in e7.HEAD else p[k]), k
    assert torch.equal(runner.initial_state(s["twin"])["dense6_1.weight"], theta_0["dense6_1.weight"])
    assert not torch.equal(runner.initial_state(e7.specs(TINY, "far", 4)["scratch"])["conv1.weight"],
                           theta_0["conv1.weight"])


def test_the_pretrained_face_head_knows_faces_before_fine_tuning(cache):
    """The source is a real face classifier: zero-shot on lfw_subset it beats chance (0.5)."""
    runner = _runner(cache)
    assert e7.zero_shot(runner, n_test=80) > 0.7
    with pytest.raises(ValueError, match="near"):
        e7.zero_shot(runner, "far")


def test_runner_serves_the_split_as_onet_takes_it(cache):
    """The runner's splits are the wheel set's, grayscale repeated to RGB; the learning curve
    is scored on the first MONITOR_WHEEL test images."""
    runner = _runner(cache)
    spec = e7.specs(TINY, "far", 1)["twin"]
    x, y = runner.train_split(spec)
    (bx, by), (tx, ty) = wheel_sets.split("mnist-5k", 1, 20, 40, block=1)
    assert x.shape == (20, 3, 48, 48) and torch.equal(x[:, 0:1], bx) and torch.equal(x[:, 0], x[:, 2])
    assert torch.equal(y, by)
    mx, my = runner.monitor_split(spec.replace(n_test=200))
    assert len(mx) == MONITOR_WHEEL == 100
    assert torch.equal(mx[:, 0:1], wheel_sets.split("mnist-5k", 1, 0, 200)[1][0][:100])
    assert runner.n_outputs(spec) == 10


def test_bad_task_seed_and_specs_are_named():
    with pytest.raises(ValueError, match="task='mid'"):
        e7.specs(TINY, "mid", 0)
    with pytest.raises(ValueError, match="seed=-1"):
        e7.specs(TINY, "near", -1)
    spec = e7.specs(TINY, "near", 0)["finetuned"]
    with pytest.raises(ValueError, match="n_test is given for a wheel set"):
        spec.replace(n_test=None)
    with pytest.raises(ValueError, match="n_test is given for a wheel set"):
        RunSpec("unet", "segmentation", "fashion-split", n_test=10)
    with pytest.raises(ValueError, match="pretrained='vgg'"):
        spec.replace(pretrained="vgg")
    with pytest.raises(ValueError, match="without init_from"):
        spec.replace(init_from=spec.replace(pretrained=None))
    with pytest.raises(ValueError, match="class labels only"):
        spec.replace(task="segmentation")


def test_the_cache_key_covers_theta_p_and_the_data(cache, tmp_path, monkeypatch):
    """An E7 run's cache key changes with theta_P's bytes (only for the runs that start from
    it) and with the wheel set's arrays; a Fashion-MNIST run's key knows neither."""
    runner = _runner(cache)
    s = e7.specs(TINY, "near", 0)
    fashion = RunSpec("unet", "segmentation", "fashion-split")
    keys = {role: runner.cache.key(spec) for role, spec in s.items()}
    changed = torch.load(pretrained.path(e7.SOURCE), weights_only=True)
    changed["conv1.bias"][0] += 1e-3
    torch.save(changed, tmp_path / "onet.pt")
    monkeypatch.setattr(pretrained, "path", lambda name: tmp_path / "onet.pt")
    assert runner.cache.key(s["finetuned"]) != keys["finetuned"] and runner.cache.key(s["twin"]) != keys["twin"]
    assert runner.cache.key(s["scratch"]) == keys["scratch"]
    monkeypatch.undo()
    images, labels = wheel_sets.arrays("lfw-faces")
    monkeypatch.setitem(wheel_sets.WHEEL_SETS, "lfw-faces", lambda: (images[::-1].copy(), labels))
    wheel_sets._read.cache_clear()
    try:
        assert all(runner.cache.key(spec) != keys[role] for role, spec in s.items())
    finally:
        monkeypatch.undo()
        wheel_sets._read.cache_clear()
    assert {role: runner.cache.key(spec) for role, spec in s.items()} == keys
    assert runner.cache.key(fashion) == hashlib.sha256(json.dumps(
        {"spec": fashion.key, "data": runner.cache.data, "code": runner.cache.code}, sort_keys=True).encode()
    ).hexdigest()


@pytest.fixture(scope="module")
def trained(cache):
    runner = _runner(cache)
    states, runs = e7.train(runner, TINY, "near", (0, 1))
    assert runner.trained == 6
    return runner, states, runs


def test_train_gives_every_role_and_is_deterministic(trained, cache, tmp_path):
    _, states, runs = trained
    assert sorted(states) == [(s, r) for s in (0, 1) for r in sorted(e7.FINETUNE_ROLES)]
    assert set(runs.role) == set(e7.FINETUNE_ROLES) and len(runs) == 6
    assert (runs[runs.role == "scratch"].start == "theta_0").all()
    again, runs2 = e7.train(_runner(tmp_path / "other_cache"), TINY, "near", (0,))  # retrained elsewhere
    for role in e7.FINETUNE_ROLES:
        for k, v in again[(0, role)].items():
            assert torch.equal(v, states[(0, role)][k]), (role, k)
    # the fine-tuned run moved from its start
    start = _runner(cache).initial_state(e7.specs(TINY, "near", 0)["finetuned"])
    assert not torch.equal(states[(0, "finetuned")]["conv1.weight"], start["conv1.weight"])


def test_a_second_runner_loads_every_run_from_the_cache(trained, cache):
    _, states, runs = trained
    runner = _runner(cache)
    cached, runs2 = e7.train(runner, TINY, "near", (0, 1))
    assert runner.trained == 0
    assert all(torch.equal(cached[r][k], states[r][k]) for r in states for k in states[r])
    assert runs2.drop(columns="seconds").equals(runs.drop(columns="seconds"))


def test_measurements_and_verdicts_have_their_shape(trained, tmp_path):
    runner, states, runs = trained
    d = e7.kernel_distances(runner, states, TINY, "near")
    assert set(d.donor) == set(e7.PRETRAINED_DONORS) and set(d.layer) == {"conv1", "conv2", "conv3", "conv4"}
    assert d[d.layer == "conv1"][e7.BASELINE].eq(0).all() and d[d.layer == "conv4"][e7.BASELINE].eq(1).all()
    scans = e7.swap_scans(runner, states, TINY, "near")
    src = scans[scans.donor == "pretrained"]
    assert set(src.set) == set(TINY.source_sets) and not (scans.layers.str.contains("dense")).any()
    table = e7.verdicts(runs, scans, d)
    assert set(table.verdict) <= {"holds", "refuted", "undecided"}
    assert len(table) == 2 + 4 + 2 + 1  # controls, V1 per layer, V2 per criterion, V3
    ckpts = e7.save_checkpoints(states, "near", tmp_path)
    assert set(ckpts.role) == set(e7.FINETUNE_ROLES)
    out = tmp_path / "analyze"
    assert reuse_cli(e7.analyze_argv(ckpts, "near", 0, out)) == 0
    # the wheel's onet.pt against the fine-tuned copy: its box and landmark heads do not pair
    layers = pd.read_csv(out / "layers.csv")
    assert list(layers.layer) == ["conv1", "conv2", "conv3", "conv4", "dense5", "dense6_1"]
    unmatched = pd.read_csv(out / "unmatched.csv")
    assert set(unmatched.source_layer) == {"dense6_2", "dense6_3"} and set(unmatched.reason) == {"only in source"}
    assert json.loads((out / "analyze.json").read_text())["summary"]["relation"] == "fine-tuned"
    settings = e7.settings(runner)
    assert settings["pretrained_sha256"] == pretrained.sha256(e7.SOURCE) and "data" not in settings
    assert set(settings["wheel_sets_sha256"]) == {"lfw-faces", "mnist-5k"}


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
