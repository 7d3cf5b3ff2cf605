"""Shared fixtures: a small fake Fashion-MNIST written as real IDX gz files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reuse.study.config import SmallData, get_profile
from reuse.study.training.data import write_synthetic_fashion
from reuse.study.training.train import Runner


@pytest.fixture(scope="session")
def fake_fashion_dir(tmp_path_factory) -> Path:
    return write_synthetic_fashion(tmp_path_factory.mktemp("fashion"), n_train=400, n_test=200)


@pytest.fixture
def fake_fashion(fake_fashion_dir, monkeypatch) -> Path:
    """Point the package at the fake data through $REUSE_DATA_DIR."""
    monkeypatch.setenv("REUSE_DATA_DIR", str(fake_fashion_dir))
    return fake_fashion_dir


@pytest.fixture(scope="module")
def runner_profile(fake_fashion_dir, tmp_path_factory):
    """A CPU runner on the fake data with a cache shared by the experiment tests, and a
    profile smaller than smoke."""
    mp = pytest.MonkeyPatch()
    mp.setenv("REUSE_DATA_DIR", str(fake_fashion_dir))
    runner = Runner("cpu", tmp_path_factory.getbasetemp() / "selection_cache", progress=False)
    profile = get_profile("smoke", [0, 1], n_source=64, n_target=48, n_test=32, steps=30, n_bn=32,
                          small=SmallData(steps=4, batch_size=8))
    yield runner, profile
    mp.undo()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# one seed, architecture, task and pair of notebook 01: the smallest real run of the runner
SMALL_RUN = ("--profile", "smoke", "--device", "cpu", "--seeds", "0", "--only", "01",
             "--set", "architectures=[unet]", "--set", "tasks=[segmentation]",
             "--set", "pairs=[fashion-split]")


def reuse_run(*args: str, cache: Path, output: Path, popen: bool = False, timeout: float = 600):
    """``python -m reuse run ARGS --output OUTPUT`` in a child process on cache ``cache``
    (started in its own session, so a test can kill it with its kernel)."""
    env = dict(os.environ, REUSE_CACHE_DIR=str(cache), JUPYTER_PREFER_ENV_PATH="1")
    cmd = [sys.executable, "-m", "reuse", "run", *args, "--output", str(output)]
    if popen:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def trained_log(cache: Path) -> list[dict]:
    """The lines of the cache's training log (reuse.study.training.train.Runner._log)."""
    log = cache / "trained.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 256 KiB file system (tmpfs; needs root, skipped elsewhere), unmounted after
    the test: a full disk without monkeypatching."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                                           capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path, leave: int = 0) -> None:
    """Fill ``folder``'s file system up to ``leave`` bytes (a file ``folder/.filler``)."""
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    (folder / ".filler").write_bytes(b"\0" * max(free - leave, 0))
