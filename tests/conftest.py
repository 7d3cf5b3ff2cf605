"""Shared fixtures: a small fake Fashion-MNIST written as real IDX gz files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from reuse.data import FASHION_FILES


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> None:
    """Write ``array`` (uint8) as an IDX file, the format of the original distribution."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    blob = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(blob)


def _fake_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class c draws a bright rectangle whose size depends on c, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = rng.integers(0, 30, size=(n, 28, 28))
    for i, c in enumerate(labels):
        h, w = 6 + c, 16 - c
        top, left = rng.integers(2, 28 - h - 1), rng.integers(2, 28 - w - 1)
        images[i, top:top + h, left:left + w] = 200
    return images.astype(np.uint8), labels.astype(np.uint8)


@pytest.fixture(scope="session")
def fake_fashion_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fashion")
    for split, n, seed in (("train", 400, 0), ("test", 200, 1)):
        images, labels = _fake_split(n, seed)
        write_idx(folder / FASHION_FILES[(split, "images")], images)
        write_idx(folder / FASHION_FILES[(split, "labels")], labels)
    return folder


@pytest.fixture
def fake_fashion(fake_fashion_dir, monkeypatch) -> Path:
    """Point the package at the fake data through $REUSE_DATA_DIR."""
    monkeypatch.setenv("REUSE_DATA_DIR", str(fake_fashion_dir))
    return fake_fashion_dir


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
