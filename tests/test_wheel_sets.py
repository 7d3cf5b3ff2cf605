"""reuse.study.training.wheel_sets: notebook 07's targets from installed wheels, split per seed."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from reuse.study.training import wheel_sets


def test_lfw_subset_is_faces_first():
    images, labels = wheel_sets.arrays("lfw-faces")
    assert images.shape == (200, 25, 25) and labels[:100].all() and not labels[100:].any()
    images, labels = wheel_sets.arrays("mnist-5k")
    assert images.shape == (5000, 28, 28) and np.bincount(labels).tolist() == [500] * 10
    assert wheel_sets.n_classes("lfw-faces") == 2 and wheel_sets.n_classes("mnist-5k") == 10


@pytest.mark.parametrize("name, n_cls", [("lfw-faces", 2), ("mnist-5k", 10)])
def test_split_is_stratified_disjoint_and_seeded(name, n_cls):
    (b0, y0), test = wheel_sets.split(name, 1, 2 * n_cls, 4 * n_cls)
    (b1, y1), test1 = wheel_sets.split(name, 1, 2 * n_cls, 4 * n_cls, block=1)
    assert test[0].shape == (4 * n_cls, 1, 48, 48) and torch.equal(test[0], test1[0])
    for x, y in ((b0, y0), (b1, y1), test):
        assert np.bincount(y.numpy(), minlength=n_cls).tolist() == [len(y) // n_cls] * n_cls
        assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0  # MTCNN's (255 x - 127.5) / 128
    flat = {name: {v.numpy().tobytes() for v in x} for name, x in (("b0", b0), ("b1", b1), ("test", test[0]))}
    assert not flat["b0"] & flat["b1"] and not flat["test"] & flat["b0"] and not flat["test"] & flat["b1"]
    assert torch.equal(wheel_sets.split(name, 1, 2 * n_cls, 4 * n_cls, block=1)[0][0], b1)
    assert not torch.equal(wheel_sets.split(name, 2, 2 * n_cls, 4 * n_cls)[0][0], b0)
    # the test split alone is the same images, whatever the blocks' size
    assert torch.equal(wheel_sets.split(name, 1, 0, 4 * n_cls)[1][0], test[0])


@pytest.mark.parametrize("kwargs, match", [({"n_train": 3, "n_test": 4}, "multiples"),
                                           ({"n_train": 2, "n_test": 0}, "multiples"),
                                           ({"n_train": 100, "n_test": 40, "block": 1}, "available")])
def test_split_refuses_bad_sizes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        wheel_sets.split("lfw-faces", 0, **kwargs)
    with pytest.raises(ValueError, match="allowed: lfw-faces, mnist-5k"):
        wheel_sets.arrays("cifar")


def test_sha256_follows_the_arrays(monkeypatch):
    before = wheel_sets.sha256("lfw-faces")
    images, labels = wheel_sets.arrays("lfw-faces")
    changed = images.copy()
    changed[0, 0, 0] += 0.5
    monkeypatch.setitem(wheel_sets.WHEEL_SETS, "lfw-faces", lambda: (changed, labels))
    wheel_sets._read.cache_clear()
    try:
        assert wheel_sets.sha256("lfw-faces") != before
    finally:
        monkeypatch.undo()
        wheel_sets._read.cache_clear()
    assert wheel_sets.sha256("lfw-faces") == before
