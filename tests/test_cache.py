"""The run cache (reuse.study.training.cache): entries keyed by data and code, scores tied to weights."""

import json
import shutil
import warnings

import numpy as np
import pytest

from reuse.study.training import cache as rcache
from reuse.study.training.data import FASHION_FILES, read_idx, write_idx, write_synthetic_fashion
from reuse.study.training.spec import RunSpec
from reuse.study.training.train import Runner

TINY = RunSpec("plain", "autoencoder", "fashion-split", width=2, depth=1, steps=4, batch_size=16,
               n_train=32, image_size=16)


def _runner(cache, data):
    return Runner("cpu", cache_dir=cache, data_dir=data, progress=False)


def test_other_data_retrains_and_the_settings_name_the_data_of_the_runs(fake_fashion_dir, tmp_path):
    (tmp_path / "other").mkdir()
    other = write_synthetic_fashion(tmp_path / "other", n_train=400, n_test=200, seed=1)
    a = _runner(tmp_path / "cache", fake_fashion_dir)
    first = a.train(TINY)
    b = _runner(tmp_path / "cache", other)  # the same spec, other files: never the first's weights
    assert not b.train(TINY).cached and b.trained == 1
    assert a.settings()["data_sha256"] != b.settings()["data_sha256"]
    again = _runner(tmp_path / "cache", fake_fashion_dir)
    run = again.train(TINY)
    assert run.cached and run.digest() == first.digest()
    assert again.settings()["data_sha256"] == a.cache.data  # what the results JSON records


def test_data_replaced_after_the_runner_started_never_trains_under_the_old_key(fake_fashion_dir, tmp_path):
    """The runner reads and hashes the files once: labels shuffled between its start and its
    training change neither what it trains on nor the key it stores the run under."""
    data = shutil.copytree(fake_fashion_dir, tmp_path / "data")
    runner = _runner(tmp_path / "cache", data)
    for split in ("train", "test"):
        path = data / FASHION_FILES[(split, "labels")]
        write_idx(path, np.random.default_rng(0).permutation(read_idx(path)))
    run = runner.train(TINY)
    assert run.digest() == _runner(None, fake_fashion_dir).train(TINY).digest()  # the data it hashed
    again = _runner(tmp_path / "cache", fake_fashion_dir).train(TINY)
    assert again.cached and again.digest() == run.digest()
    shuffled = _runner(tmp_path / "cache", data)
    assert not shuffled.train(TINY).cached and shuffled.cache.data != runner.cache.data


def test_other_training_code_retrains(fake_fashion_dir, tmp_path, monkeypatch):
    _runner(tmp_path / "cache", fake_fashion_dir).train(TINY)
    assert _runner(tmp_path / "cache", fake_fashion_dir).train(TINY).cached
    monkeypatch.setattr(rcache, "code_fingerprint", lambda modules: "f" * 64)  # as if fit.py changed
    changed = _runner(tmp_path / "cache", fake_fashion_dir)
    assert not changed.train(TINY).cached and changed.trained == 1


def test_the_code_fingerprint_reads_the_training_modules(tmp_path):
    fp = rcache.code_fingerprint(rcache.TRAINING_CODE)
    assert len(fp) == 64 and fp == rcache.code_fingerprint(rcache.TRAINING_CODE)
    assert fp != rcache.code_fingerprint(rcache.TRAINING_CODE[:-1])
    assert {"reuse.study.training.fit", "reuse.study.training.models"} <= set(rcache.TRAINING_CODE)


def _memo(cache, weights, values=(0.25, 0.75)):
    calls = []

    def compute():
        calls.append(1)
        return list(values)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = cache.memo({"what": "swap"}, compute, weights)
    return out, len(calls), [str(w.message) for w in caught]


def test_scores_are_tied_to_the_weights_they_came_from(fake_fashion_dir, tmp_path):
    cache = _runner(tmp_path / "cache", fake_fashion_dir).cache
    assert _memo(cache, ["a" * 64]) == ([0.25, 0.75], 1, [])
    assert _memo(cache, ["a" * 64]) == ([0.25, 0.75], 0, [])  # served from disk
    values, calls, caught = _memo(cache, ["b" * 64], values=(0.5, 0.5))  # other weights: recomputed
    assert (values, calls) == ([0.5, 0.5], 1)
    assert any("other weights" in w and "moved to" in w for w in caught)
    assert list((tmp_path / "cache" / "scores").rglob("*.bad"))  # quarantined, not deleted


def test_a_hand_edited_score_is_quarantined_and_recomputed(fake_fashion_dir, tmp_path):
    cache = _runner(tmp_path / "cache", fake_fashion_dir).cache
    _memo(cache, ["a" * 64])
    (entry,) = (tmp_path / "cache" / "scores").rglob("*.json")
    data = json.loads(entry.read_text())
    data["values"] = [0.5, 0.5]  # the attack of issue 19: every value set to 0.5
    entry.write_text(json.dumps(data))
    values, calls, caught = _memo(cache, ["a" * 64])
    assert (values, calls) == ([0.25, 0.75], 1)
    assert any("checksum" in w for w in caught)


@pytest.mark.parametrize("entry", ["not json", json.dumps({"values": [1.0]})])
def test_a_corrupt_score_entry_is_recomputed_with_a_warning(fake_fashion_dir, tmp_path, entry):
    cache = _runner(tmp_path / "cache", fake_fashion_dir).cache
    _memo(cache, [])
    (path,) = (tmp_path / "cache" / "scores").rglob("*.json")
    path.write_text(entry)
    values, calls, caught = _memo(cache, [])
    assert (values, calls) == ([0.25, 0.75], 1) and caught
