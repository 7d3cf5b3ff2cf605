"""Pretrained weights a run can start from, by name (``RunSpec.pretrained``).

- ``mtcnn-onet``: theta_P of notebook 07, the output network ONet of MTCNN's face detector
  (Zhang et al. 2016, arXiv 1604.02878) as shipped inside the ``facenet-pytorch`` wheel
  (``facenet_pytorch/data/onet.pt``), read from the installed distribution's files with
  :mod:`importlib.metadata`; nothing is fetched. The package itself is never imported: it
  pins torch < 2.3 (installed with ``--no-deps``) and its ``__init__`` pulls torchvision ops
  and ``requests``, so :class:`reuse.study.training.models.ONet` mirrors its module names. Its face /
  non-face head ``dense6_1`` is kept; the bounding-box and landmark heads are dropped.

The file is read once per process, and its state and SHA-256 come from the same bytes, so
the run cache keys a run by the weights it started from (:func:`sha256`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from .data import CLASSIFICATION
from .models import build_model


@dataclass(frozen=True)
class Source:
    """Where a pretrained state ships, and the model it loads into strictly."""

    distribution: str  # the installed distribution whose files hold it
    file: str  # its path inside the distribution
    architecture: str  # :func:`reuse.study.training.models.build_model`'s name of the model ...
    n_classes: int  # ... and its head's classes
    unused: tuple[str, ...] = ()  # keys of the file the model has no place for


SOURCES = {"mtcnn-onet": Source("facenet-pytorch", "facenet_pytorch/data/onet.pt", "onet", 2,
                                ("dense6_2.weight", "dense6_2.bias", "dense6_3.weight", "dense6_3.bias"))}


def _source(name: str) -> Source:
    if name not in SOURCES:
        raise ValueError(f"pretrained={name!r}; allowed: {', '.join(SOURCES)}")
    return SOURCES[name]


def path(name: str) -> Path:
    """The file of the pretrained state ``name`` inside its installed distribution."""
    source = _source(name)
    try:
        dist = importlib.metadata.distribution(source.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"{source.distribution} is not installed: run ./run_all.sh --setup-only (it "
                                "installs requirements-nodeps.lock with --no-deps)") from None
    found = Path(dist.locate_file(source.file))
    if not found.is_file():
        raise FileNotFoundError(f"{found}: {source.distribution} {dist.version} has no {source.file}")
    return found


@lru_cache(maxsize=4)
def _read(name: str, file: str) -> tuple[str, dict[str, torch.Tensor]]:
    """(SHA-256 of the file's bytes, its state without the unused keys) from one reading,
    checked to load strictly into the source's model (names and shapes, or RuntimeError)."""
    blob = Path(file).read_bytes()
    source = _source(name)
    state = {k: v for k, v in torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True).items()
             if k not in source.unused}
    with torch.random.fork_rng(devices=[]):  # the check's model draws no numbers of the caller's
        build_model(source.architecture, CLASSIFICATION, 3, source.n_classes).load_state_dict(state)
    return hashlib.sha256(blob).hexdigest(), state


def state(name: str) -> dict[str, torch.Tensor]:
    """The pretrained state ``name`` (a copy: the caller may change it)."""
    return {k: v.clone() for k, v in _read(name, str(path(name)))[1].items()}


def sha256(name: str) -> str:
    """SHA-256 of the file :func:`state` was read from: the pretrained weights' identity."""
    return _read(name, str(path(name)))[0]
