import warnings

import pytest
import torch

from reuse.train import Runner, RunSpec

TINY = dict(width=2, depth=1, epochs=2, batch_size=16, n_train=48)


def _runner(tmp_path, **kw):
    return Runner("cpu", cache_dir=tmp_path / "cache", progress=False, **kw)


def test_same_seed_same_history_and_weights(fake_fashion):
    spec = RunSpec("unet", "segmentation", "fashion-split", **TINY)
    a = Runner("cpu", cache_dir=None, progress=False).train(spec)
    b = Runner("cpu", cache_dir=None, progress=False).train(spec)
    assert a.history == b.history and len(a.history) == 2
    assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)
    c = Runner("cpu", cache_dir=None, progress=False).train(spec.replace(order_seed=1))
    assert c.history != a.history


def test_cache_hit_loads_without_training(fake_fashion, tmp_path):
    spec = RunSpec("pspnet", "autoencoder", "fashion-to-digits", domain="target", **TINY)
    first = _runner(tmp_path)
    run = first.train(spec)
    assert first.trained == 1 and not run.cached
    second = _runner(tmp_path)
    again = second.train(spec)
    assert second.trained == 0 and again.cached
    assert all(torch.equal(run.state[k], again.state[k]) for k in run.state)
    assert again.history == run.history
    assert not list((tmp_path / "cache").rglob("*.tmp"))  # writes are atomic


def test_corrupt_cache_entry_is_retrained(fake_fashion, tmp_path):
    spec = RunSpec("plain", "segmentation", "fashion-split", **TINY)
    run = _runner(tmp_path).train(spec)
    (path,) = (tmp_path / "cache").rglob("*.pt")
    path.write_bytes(path.read_bytes()[:100])
    runner = _runner(tmp_path)
    with pytest.warns(UserWarning, match="corrupt cache entry"):
        again = runner.train(spec)
    assert runner.trained == 1 and not again.cached
    assert all(torch.equal(run.state[k], again.state[k]) for k in run.state)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _runner(tmp_path).train(spec).cached  # the rewritten entry is good


def test_cache_is_filed_by_precision(fake_fashion, tmp_path):
    spec = RunSpec("plain", "autoencoder", "fashion-split", **TINY)
    fp32 = _runner(tmp_path, precision="fp32")
    fp32.train(spec)
    bf16 = _runner(tmp_path, precision="bf16")
    assert bf16.precision == "bf16" and not bf16.train(spec).cached and bf16.trained == 1
    assert sorted(p.parts[-3] for p in (tmp_path / "cache").rglob("*.pt")) == ["bf16", "fp32"]
    assert _runner(tmp_path, precision="fp32").train(spec).cached
    # a runner trains in the precision its cache folder names, even after another one
    # (here bf16) changed the global autocast setting
    late_fp32 = Runner("cpu", cache_dir=None, progress=False, precision="fp32")
    Runner("cpu", cache_dir=None, progress=False, precision="bf16")
    again = late_fp32.train(spec.replace(init_seed=5))
    fresh = Runner("cpu", cache_dir=None, progress=False, precision="fp32").train(spec.replace(init_seed=5))
    assert all(torch.equal(again.state[k], fresh.state[k]) for k in again.state)


def test_failing_compile_retrains_eagerly(fake_fashion, monkeypatch):
    spec = RunSpec("unet", "segmentation", "fashion-split", **TINY)
    eager = Runner("cpu", cache_dir=None, progress=False).train(spec)

    def broken(model, enabled=True):
        def forward(x):
            model(x)  # BN statistics move before the failure: the retrain must not see that
            raise RuntimeError("inductor exploded")
        return forward if enabled else model
    monkeypatch.setattr("reuse.train.compiled", broken)
    runner = Runner("cpu", cache_dir=None, progress=False, compile=True)
    with pytest.warns(UserWarning, match="torch.compile failed .*inductor exploded"):
        run = runner.train(spec)
    assert not runner.compile  # later runs go straight to eager
    assert all(torch.equal(run.state[k], eager.state[k]) for k in run.state)
    assert run.history == eager.history


def test_key_covers_the_config():
    spec = RunSpec("unet", "segmentation", "fashion-split")
    keys = {spec.key, spec.replace(lr=1e-3).key, spec.replace(init_seed=1).key,
            spec.replace(n_train=10).key, spec.replace(domain="target").key}
    assert len(keys) == 5 and spec.key == RunSpec("unet", "segmentation", "fashion-split").key


def test_init_from_and_freeze(fake_fashion):
    runner = Runner("cpu", cache_dir=None, progress=False)
    parent = RunSpec("unet", "segmentation", "fashion-split", **TINY)
    key = "down.0.0.0.weight"
    child = parent.replace(domain="target", init_from=parent, init_keys=(key,), freeze=(key,))
    trained_parent, trained_child = runner.train(parent), runner.train(child)
    assert torch.equal(trained_child.state[key], trained_parent.state[key])
    assert not torch.equal(trained_child.state["head.weight"], trained_parent.state["head.weight"])
    with pytest.raises(ValueError, match="freeze names unknown"):
        runner.train(parent.replace(freeze=("nope",)))


def test_bad_specs():
    with pytest.raises(ValueError, match="domain='middle'"):
        RunSpec("unet", "segmentation", "fashion-split", domain="middle")
    with pytest.raises(ValueError, match="pair='x'"):
        RunSpec("unet", "segmentation", "x")
    with pytest.raises(ValueError, match="epochs=0"):
        RunSpec("unet", "segmentation", "fashion-split", epochs=0)
