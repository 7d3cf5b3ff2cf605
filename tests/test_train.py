import os
import warnings

import pytest
import torch

from reuse.study.training.cache import compute_class
from reuse.study.training import train
from reuse.study.training.train import Runner, RunSpec
from reuse.toolkit.provenance import cpu_class

TINY = dict(width=2, depth=1, steps=8, batch_size=16, n_train=48, image_size=16)


def _runner(tmp_path, **kw):
    return Runner("cpu", cache_dir=tmp_path / "cache", progress=False, **kw)


def _same(a, b):
    return a.state.keys() == b.state.keys() and all(torch.equal(a.state[k], b.state[k]) for k in a.state)


def test_same_seed_same_history_and_weights(fake_fashion):
    spec = RunSpec("unet", "segmentation", "fashion-split", **TINY)
    a = Runner("cpu", cache_dir=None, progress=False).train(spec)
    b = Runner("cpu", cache_dir=None, progress=False).train(spec)
    assert a.history == b.history and [h["step"] for h in a.history] == list(range(1, 9))
    assert _same(a, b)
    c = Runner("cpu", cache_dir=None, progress=False).train(spec.replace(order_seed=1))
    assert c.history != a.history


def test_runner_leaves_process_settings_as_it_found_them(fake_fashion):
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    runner = Runner("cpu", cache_dir=None, progress=False, threads=1, deterministic=not deterministic)
    runner.train(RunSpec("pspnet", "segmentation", "fashion-split", **TINY))
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic


def test_workers_give_the_weights_of_one_process(fake_fashion, tmp_path):
    specs = [RunSpec("unet", "segmentation", "fashion-split", init_seed=i, **TINY) for i in range(3)]
    parallel = _runner(tmp_path, workers=2)
    try:
        runs = parallel.train_many(specs)
    finally:
        parallel.close()
    assert parallel.trained == 3
    alone = Runner("cpu", cache_dir=None, progress=False).train_many(specs)
    assert all(_same(a, b) and a.history == b.history for a, b in zip(runs, alone))


def test_an_executor_trains_into_the_cache_by_absolute_paths(fake_fashion, tmp_path, monkeypatch):
    """A cluster's workers run elsewhere: they get absolute folders, and log each training."""
    from concurrent.futures import Future

    class InProcess:  # an executor like a Dask client's, recording what it is sent
        configs = []

        def submit(self, fn, config, *args):
            self.configs.append(config)
            future = Future()
            future.set_result(fn(config, *args))
            return future

    monkeypatch.chdir(tmp_path)
    specs = [RunSpec("unet", "segmentation", "fashion-split", init_seed=i, **TINY) for i in range(2)]
    runner = Runner("cpu", cache_dir="cache", data_dir=os.path.relpath(fake_fashion), progress=False,
                    cluster=InProcess())
    runner.train_many(specs)
    assert {os.path.isabs(c["cache_dir"]) and os.path.isabs(c["data_dir"]) for c in InProcess.configs} == {True}
    log = (tmp_path / "cache" / "trained.log").read_text().splitlines()
    assert len(log) == 2 and len(list((tmp_path / "cache").rglob("*.pt"))) == 2


def test_cache_hit_loads_without_training(fake_fashion, tmp_path):
    spec = RunSpec("pspnet", "autoencoder", "fashion-to-digits", domain="target", **TINY)
    first = _runner(tmp_path)
    run = first.train(spec)
    assert first.trained == 1 and not run.cached
    second = _runner(tmp_path)
    again = second.train(spec)
    assert second.trained == 0 and again.cached and _same(run, again)
    assert again.history == run.history
    assert not list((tmp_path / "cache").rglob("*.tmp"))  # writes are atomic
    (path,) = (tmp_path / "cache").rglob("*.pt")
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # files follow the umask


@pytest.mark.parametrize("damage", ["truncate", "nan", "missing_key", "wrong_shape", "no_history"])
def test_bad_cache_entry_is_moved_aside_and_retrained(fake_fashion, tmp_path, damage):
    spec = RunSpec("plain", "segmentation", "fashion-split", **TINY)
    run = _runner(tmp_path).train(spec)
    (path,) = (tmp_path / "cache").rglob("*.pt")
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    else:
        blob = torch.load(path, weights_only=True)
        key = next(iter(blob["state"]))
        if damage == "nan":
            blob["state"][key] = torch.full_like(blob["state"][key], float("nan"))
        elif damage == "missing_key":
            del blob["state"][key]
        elif damage == "wrong_shape":
            blob["state"][key] = blob["state"][key][:1]
        else:
            blob["history"] = []
        torch.save(blob, path)
    runner = _runner(tmp_path)
    with pytest.warns(UserWarning, match=f"bad cache entry {path}.*moved to"):
        again = runner.train(spec)
    assert runner.trained == 1 and not again.cached and _same(run, again)
    assert path.with_suffix(".bad").exists()  # kept for inspection
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _runner(tmp_path).train(spec).cached  # the rewritten entry is good


def test_cache_is_filed_by_precision_and_threads(fake_fashion, tmp_path):
    spec = RunSpec("plain", "autoencoder", "fashion-split", **TINY)
    _runner(tmp_path, precision="fp32").train(spec)
    bf16 = _runner(tmp_path, precision="bf16")
    assert bf16.precision == "bf16" and not bf16.train(spec).cached and bf16.trained == 1
    two = _runner(tmp_path, threads=2)
    assert not two.train(spec).cached
    cpu = torch.device("cpu")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir() if p.is_dir()) == sorted(
        compute_class(cpu, precision, threads) for precision, threads in [("bf16", 1), ("fp32", 1), ("fp32", 2)])
    assert compute_class(cpu, "fp32", 1).endswith(f"-{cpu_class()['vendor']}-mklCOMPATIBLE-dnnAVX2-aten{cpu_class()['aten_isa']}")
    assert _runner(tmp_path, precision="fp32").train(spec).cached
    assert two.settings()["threads"] == 2 and bf16.settings()["precision"] == "bf16"


def test_failing_compile_retrains_eagerly(fake_fashion, monkeypatch):
    spec = RunSpec("unet", "segmentation", "fashion-split", **TINY)
    eager = Runner("cpu", cache_dir=None, progress=False).train(spec)

    def broken(model, enabled=True):
        def forward(x):
            model(x)  # BN statistics move before the failure: the retrain must not see that
            raise RuntimeError("inductor exploded")
        return forward if enabled else model
    monkeypatch.setattr("reuse.study.training.fit.compiled", broken)
    runner = Runner("cpu", cache_dir=None, progress=False, compile=True)
    with pytest.warns(UserWarning, match="torch.compile failed .*inductor exploded"):
        run = runner.train(spec)
    assert not runner.compile  # later runs go straight to eager
    assert _same(run, eager) and run.history == eager.history


def test_key_covers_the_config():
    spec = RunSpec("unet", "segmentation", "fashion-split")
    keys = {spec.key, spec.replace(lr=1e-3).key, spec.replace(init_seed=1).key,
            spec.replace(n_train=10).key, spec.replace(domain="target").key, spec.replace(block=1).key,
            spec.replace(image_size=16).key, spec.replace(steps=7).key}
    assert len(keys) == 8 and spec.key == RunSpec("unet", "segmentation", "fashion-split").key


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


def test_align_to_permutes_the_parent_onto_the_run_it_names(fake_fashion):
    """The parent's channels are weight-matched onto the align_to run's before any key is
    copied: the state handed on is that permutation of the parent, closer to the run it names
    than the parent was (weight matching is a local search, so not always back to zero)."""
    from reuse.toolkit.alignment import apply_permutation, permutation_spec, weight_matching

    runner = Runner("cpu", cache_dir=None, progress=False)
    base = RunSpec("unet", "segmentation", "fashion-split", **TINY)
    target = runner.train(base)
    spec = permutation_spec(runner.build(base))
    perms = {g: torch.randperm(n, generator=torch.Generator().manual_seed(1)) for g, n in spec.sizes.items()}
    stranger = base.replace(init_seed=7)
    shuffled = apply_permutation(spec, perms, target.state)
    runner._runs[stranger.key] = type(target)(stranger, shuffled, [])
    child = base.replace(domain="target", init_from=stranger, align_to=base)
    aligned = runner.parent_state(child)
    expected = apply_permutation(spec, weight_matching(spec, shuffled, target.state), shuffled)
    assert all(torch.equal(aligned[k], expected[k]) for k in expected)

    def distance(state):
        return sum(float((state[k].float() - target.state[k].float()).square().sum()) for k in spec.by_key())
    assert distance(aligned) < distance(shuffled)
    assert runner.parent_state(child.replace(align_to=None)) is shuffled  # no align_to: the parent as it is
    with pytest.raises(ValueError, match="align_to permutes the init_from parent"):
        base.replace(align_to=base)


def test_bad_specs_and_settings():
    with pytest.raises(ValueError, match="domain='middle'"):
        RunSpec("unet", "segmentation", "fashion-split", domain="middle")
    with pytest.raises(ValueError, match="pair='x'"):
        RunSpec("unet", "segmentation", "x")
    with pytest.raises(ValueError, match="steps=0"):
        RunSpec("unet", "segmentation", "fashion-split", steps=0)
    with pytest.raises(ValueError, match="batch_size=1"):
        RunSpec("unet", "segmentation", "fashion-split", batch_size=1)
    with pytest.raises(ValueError, match="image_size=20 is not divisible"):
        RunSpec("unet", "segmentation", "fashion-split", image_size=20, depth=3)
    with pytest.raises(ValueError, match="threads=0"):
        Runner("cpu", threads=0)
    with pytest.raises(ValueError, match="precision='fp16'"):
        Runner("cpu", precision="fp16")


def test_read_only_cache_serves_and_says_new_runs_are_not_saved(fake_fashion, tmp_path, monkeypatch):
    spec = RunSpec("unet", "segmentation", "fashion-split", **TINY)
    _runner(tmp_path).train(spec)

    def denied(*args, **kwargs):  # what a read-only folder answers (root ignores chmod)
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr("reuse.study.training.cache.files.write_atomic", denied)
    monkeypatch.setattr("reuse.study.training.cache.FileLock", denied)
    runner = _runner(tmp_path)
    assert runner.train(spec).cached
    with pytest.warns(UserWarning, match="cannot be written .* kept in memory only"):
        run = runner.train(spec.replace(init_seed=9))
    assert not run.cached and runner.trained == 1
    assert runner.train(spec.replace(init_seed=9)) is run  # kept for this runner's life
    assert len(list((tmp_path / "cache").rglob("*.pt"))) == 1


def test_unreadable_entry_is_trained_without_replacing_it(fake_fashion, tmp_path, monkeypatch):
    spec = RunSpec("unet", "segmentation", "fashion-split", **TINY)
    _runner(tmp_path).train(spec)
    (path,) = (tmp_path / "cache").rglob("*.pt")
    before = path.read_bytes()
    real = torch.load

    def denied(p, *args, **kwargs):
        if str(p) == str(path):
            raise PermissionError(13, "Permission denied")
        return real(p, *args, **kwargs)
    monkeypatch.setattr(torch, "load", denied)
    runner = _runner(tmp_path)
    with pytest.warns(UserWarning, match="cannot read cache entry .*Permission denied.*without replacing"):
        assert not runner.train(spec).cached
    assert path.read_bytes() == before and not path.with_suffix(".bad").exists()


def test_a_run_finished_elsewhere_while_waiting_is_loaded_not_retrained(fake_fashion, tmp_path):
    spec = RunSpec("unet", "segmentation", "fashion-split", **TINY)
    first, second = _runner(tmp_path), _runner(tmp_path)
    second._load(spec)  # nothing yet: as if it looked before the other finished
    first.train(spec)
    (run,) = second.obtain([spec], [None])
    assert run.cached and second.trained == 0
    assert list((tmp_path / "cache").rglob("*.lock"))  # the entry was trained under its lock


def test_a_worker_refuses_data_that_changed_since_the_run_started(fake_fashion, tmp_path, monkeypatch):
    """A worker process reads the files itself: other bytes than the runner hashed are refused,
    never trained and stored for the runner's run."""
    monkeypatch.setattr(train, "_WORKERS", {})
    config = {**Runner("cpu", None, progress=False)._worker_config(), "data_sha256": "0" * 64}
    spec = RunSpec("plain", "autoencoder", "fashion-split", width=2, depth=1, steps=2, batch_size=8,
                   n_train=16, image_size=16)
    with pytest.raises(ValueError, match="changed since the run started"):
        train._obtain_remote(config, spec, None)
