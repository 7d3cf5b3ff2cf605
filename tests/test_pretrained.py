"""reuse.study.training.pretrained: theta_P read from the installed wheel's file, never importing the
package, checked against the study's ONet; its SHA-256 from the same bytes."""
from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
import torch

from reuse.study.training import pretrained
from reuse.study.training.models import ONet

ONET = "mtcnn-onet"


def test_theta_p_loads_strictly_into_the_mirrored_onet():
    state = pretrained.state(ONET)
    assert set(state) == set(ONet(2).state_dict())  # the bbox and landmark heads left out
    raw = torch.load(pretrained.path(ONET), weights_only=True)
    assert set(raw) - set(state) == set(pretrained.SOURCES[ONET].unused)
    assert torch.equal(state["conv1.weight"], raw["conv1.weight"])
    assert state["conv1.weight"].shape == (32, 3, 3, 3) and state["conv4.weight"].shape == (128, 64, 2, 2)
    state["conv1.weight"].zero_()  # a copy: the next caller gets theta_P again
    assert torch.equal(pretrained.state(ONET)["conv1.weight"], raw["conv1.weight"])


def test_sha256_is_the_files():
    assert pretrained.sha256(ONET) == hashlib.sha256(pretrained.path(ONET).read_bytes()).hexdigest()


def test_the_package_is_never_imported():
    code = ("import sys; from reuse.study.training import pretrained; pretrained.state('mtcnn-onet'); "
            "print('facenet_pytorch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


def test_bad_names_and_a_missing_distribution_are_named(monkeypatch):
    with pytest.raises(ValueError, match="pretrained='vgg'.*mtcnn-onet"):
        pretrained.state("vgg")
    monkeypatch.setitem(pretrained.SOURCES, ONET, pretrained.Source("no-such-distribution-e7", "x.pt", "onet", 2))
    with pytest.raises(FileNotFoundError, match="requirements-nodeps.lock"):
        pretrained.path(ONET)
