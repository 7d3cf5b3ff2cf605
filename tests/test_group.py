"""Grouped training and batched scoring against the one-at-a-time reference."""

import math

import pytest
import torch

from reuse.study.training.cache import compute_class
from reuse.study.training.group import group_key
from reuse.study.training.models import build_model
from reuse.study.training.train import Runner, RunSpec
from reuse.toolkit.metrics import PRIMARY_METRIC, evaluate
from reuse.toolkit.scoring import evaluate_states

TINY = dict(width=2, depth=1, steps=6, batch_size=16, n_train=48, weight_decay=1e-3, image_size=16,
            lr=1e-2)
FROZEN = {"unet": ("down.0.0.0.weight", "head.bias"), "pspnet": ("stem.0.weight", "classifier.bias")}


def _runner(**kw):
    # fp32: equivalence is checked where rounding is ~1e-7 (bf16 autocast's ~1e-3, which
    # Adam amplifies, is what benchmarks/bench.py reports on machines that use it)
    return Runner("cpu", cache_dir=None, progress=False, precision="fp32", **kw)


def _close_runs(a, b, atol=2e-3):
    """Same weights up to float rounding, and the same history.

    Grouped convolutions (NCHW) round differently from the single model's channels_last
    ones and Adam divides by sqrt(v), which amplifies rounding where gradients are tiny:
    after 6 steps at lr 1e-2 most entries agree to 1e-6; the worst seen was 8e-4."""
    assert a.state.keys() == b.state.keys()
    for k in a.state:
        assert a.state[k].dtype == b.state[k].dtype, k
        diff = float((a.state[k].double() - b.state[k].double()).abs().max())
        assert diff <= atol, (k, diff)
    assert len(a.history) == len(b.history)
    for ha, hb in zip(a.history, b.history):
        assert ha.keys() == hb.keys() and ha["step"] == hb["step"]
        assert math.isclose(ha["loss"], hb["loss"], rel_tol=1e-3)
        metric = PRIMARY_METRIC[a.spec.task]
        assert math.isclose(ha[metric], hb[metric], abs_tol=1e-3)


@pytest.mark.parametrize("architecture", ["unet", "pspnet"])
def test_group_equals_one_at_a_time(fake_fashion, architecture):
    runner = _runner()
    base = RunSpec(architecture, "segmentation", "fashion-split", **TINY)
    specs = [base,
             base.replace(init_seed=1, order_seed=2),  # own theta_0 and batch order
             base.replace(domain="target", data_seed=3, order_seed=1, freeze=FROZEN[architecture])]
    grouped = runner.fit(specs)
    for run, spec in zip(grouped, specs):
        assert run.spec == spec and run.extra["group_size"] == 3
        _close_runs(run, runner.fit([spec])[0])
    theta0 = runner.initial_state(specs[2])
    for k in FROZEN[architecture]:  # frozen entries never move, weight decay included
        assert torch.equal(grouped[2].state[k], theta0[k])
        assert not torch.equal(grouped[0].state[k], theta0[k])


def test_group_autoencoder_shared_data(fake_fashion):
    runner = _runner()
    base = RunSpec("plain", "autoencoder", "fashion-split", **TINY)
    specs = [base, base.replace(init_seed=5, order_seed=5)]  # same split
    for run, spec in zip(runner.fit(specs), specs):
        _close_runs(run, runner.fit([spec])[0])


def test_group_rejects_mixed_and_bad_specs(fake_fashion):
    runner = _runner()
    base = RunSpec("unet", "segmentation", "fashion-split", **TINY)
    assert group_key(base, runner) == group_key(base.replace(init_seed=3, domain="target"), runner)
    assert group_key(base, runner) != group_key(base.replace(n_train=32), runner)
    with pytest.raises(ValueError, match="different groups"):
        runner.fit([base, base.replace(lr=1e-3)])
    with pytest.raises(ValueError, match="freeze names unknown"):
        runner.fit([base, base.replace(freeze=("nope",))])


@pytest.mark.parametrize("task", ["segmentation", "autoencoder"])
@pytest.mark.parametrize("architecture", ["unet", "pspnet"])
def test_evaluate_states_equals_loop(task, architecture):
    n_out = 4 if task == "segmentation" else 1
    x = torch.rand(40, 1, 16, 16)
    y = torch.randint(0, n_out, (40, 16, 16)) if task == "segmentation" else torch.rand(40, 1, 16, 16)
    states = []
    for seed in range(5):
        torch.manual_seed(seed)
        m = build_model(architecture, task, 1, n_out, width=2, depth=2).train()
        m(torch.rand(8, 1, 16, 16))  # non-trivial BN running statistics
        states.append({k: v.clone() for k, v in m.state_dict().items()})
    model = build_model(architecture, task, 1, n_out, width=2, depth=2)
    metric = PRIMARY_METRIC[task]
    batched = evaluate_states(model, states, x, y, task, n_out, metric, chunk=2, max_images=48)
    looped = []
    for s in states:
        model.load_state_dict(s)
        looped.append(evaluate(model, x, y, task, n_out, metrics=(metric,))[metric])
    assert batched == pytest.approx(looped, abs=1e-5)
    assert len(set(looped)) > 1  # the states really differ
    with pytest.raises(ValueError, match="lack model entries"):
        evaluate_states(model, [{"x": torch.zeros(1)}], x, y, task, n_out)


def test_train_many_grouped_is_filed_apart_from_single_runs(fake_fashion, tmp_path, capsys):
    base = RunSpec("unet", "segmentation", "fashion-split", **TINY)
    parent = base.replace(init_seed=7)
    specs = [base, base.replace(init_seed=1, domain="target"), parent,
             base.replace(domain="target", init_from=parent, init_keys=("head.weight",)),
             base]  # a duplicate and a child whose parent is trained in the same call
    assert not _runner().group_training  # off by default on the CPU, where it is slower
    grouped_runner = Runner("cpu", cache_dir=tmp_path / "cache", progress=True, group_training=True,
                            precision="fp32")
    grouped = grouped_runner.train_many(specs)
    assert grouped_runner.trained == 4 and "4/4" in capsys.readouterr().err  # the progress bar
    assert [r.extra["group_size"] for r in grouped[:3]] == [3, 3, 3]
    plain = _runner(group_training=False).train_many(specs)
    assert [r.spec for r in grouped] == specs
    for a, b in zip(grouped, plain):
        _close_runs(a, b)
    # a runner that trains one model at a time never receives grouped weights ...
    single = Runner("cpu", cache_dir=tmp_path / "cache", progress=False, precision="fp32")
    assert [r.extra["group_size"] for r in single.train_many(specs)] == [1] * 5 and single.trained == 4
    # ... and a grouping runner loads what it filed, bit for bit
    again_runner = Runner("cpu", cache_dir=tmp_path / "cache", progress=False, precision="fp32",
                          group_training=True)
    again = again_runner.train_many(specs)
    assert again_runner.trained == 0 and all(r.cached for r in again)
    folder = compute_class(torch.device("cpu"), "fp32", 1)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir() if p.is_dir()) == [folder, folder + "-grouped"]
