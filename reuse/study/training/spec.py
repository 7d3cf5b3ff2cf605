"""What one training run is (:class:`RunSpec`) and what it gives (:class:`TrainedRun`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

import torch

from . import data as rdata
from .pretrained import SOURCES
from .wheel_sets import WHEEL_SETS


@dataclass(frozen=True)
class RunSpec:
    """Everything in the run itself that determines its weights.

    ``domain`` picks the side of ``pair`` to train on. ``init_seed`` fixes theta_0;
    ``order_seed`` the order of batches; ``data_seed`` which samples form the splits and
    ``block`` which disjoint run of ``n_train`` of them this run trains on (the
    same-domain twin trains on block 1); ``n_test`` only for a wheel set
    (:mod:`reuse.study.training.wheel_sets`), split per seed with its test split drawn first: the test
    images, which decide which images the blocks hold. ``steps`` optimiser steps of ``batch_size``
    samples (the last partial batch of each pass over the data is dropped, so every step
    sees a full batch). ``channels``: input channels (grayscale repeated; 3 for a
    classifier: ResNet-18, ONet). ``init_from`` starts from another run's weights: the state
    keys in ``init_keys`` (all when None) are copied from it, the rest come from theta_0;
    with ``align_to``, the parent's channels are first permuted onto that run's weights by
    weight matching (the strangers regime: a parent from another theta_0). ``pretrained``
    starts from named pretrained weights instead (:data:`reuse.study.training.pretrained.SOURCES`):
    the keys in ``init_keys`` (all when None) from them, the rest from theta_0.
    Parameters named in ``freeze`` are not updated (their BN running statistics still are).

    The data files, the pretrained weights and the training code also decide the weights: the
    run cache keys each entry by those too (:class:`reuse.study.training.cache.RunCache`).
    """

    architecture: str
    task: str
    pair: str
    domain: str = "source"
    init_seed: int = 0
    data_seed: int = 0
    order_seed: int = 0
    block: int = 0
    n_train: int | None = None
    n_test: int | None = None
    shift: float = 0.0
    image_size: int = rdata.IMAGE_SIZE
    channels: int = 1
    width: int = 8
    depth: int = 2
    steps: int = 400
    batch_size: int = 32
    lr: float = 3e-3  # Adam, cosine-annealed to 0 over the run
    weight_decay: float = 0.0
    init_from: RunSpec | None = None
    init_keys: tuple[str, ...] | None = None
    align_to: RunSpec | None = None
    pretrained: str | None = None
    freeze: tuple[str, ...] = ()

    def __post_init__(self):
        if self.domain not in ("source", "target"):
            raise ValueError(f"domain={self.domain!r}; allowed: 'source', 'target'")
        rdata.parse_pair(self.pair)  # ValueError naming a bad pair or dose
        if self.task not in rdata.ALL_TASKS:
            raise ValueError(f"task={self.task!r}; allowed: {', '.join(rdata.ALL_TASKS)}")
        if self.steps < 1 or self.batch_size < 2 or not self.lr > 0 or self.channels < 1:
            raise ValueError(f"steps={self.steps}, batch_size={self.batch_size}, lr={self.lr}, "
                             f"channels={self.channels}: steps, lr and channels must be positive, "
                             "batch_size >= 2 (BatchNorm)")
        if self.align_to is not None and self.init_from is None:
            raise ValueError("align_to permutes the init_from parent; it needs init_from")
        if self.pretrained is not None and (self.init_from is not None or self.pretrained not in SOURCES):
            raise ValueError(f"pretrained={self.pretrained!r}, init_from={self.init_from!r}; allowed: one of "
                             f"{', '.join(SOURCES)}, without init_from")
        if self.pair in WHEEL_SETS and self.task != rdata.CLASSIFICATION:
            raise ValueError(f"pair={self.pair!r}, task={self.task!r}: a wheel set has class labels only; "
                             f"allowed: task {rdata.CLASSIFICATION!r}")
        if (self.n_test is not None) != (self.pair in WHEEL_SETS):
            raise ValueError(f"pair={self.pair!r}, n_test={self.n_test!r}: n_test is given for a wheel set "
                             f"({', '.join(WHEEL_SETS)}) and only there")
        if self.image_size % 2 ** self.depth:
            raise ValueError(f"image_size={self.image_size} is not divisible by 2**depth = "
                             f"{2 ** self.depth}")

    @property
    def key(self) -> str:
        """sha256 of the spec: the run's identity within one data set and code version."""
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def replace(self, **changes) -> RunSpec:
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        return (f"{self.architecture}/{self.task}/{self.pair}/{self.domain} init={self.init_seed} "
                f"n={self.n_train} steps={self.steps}")


@dataclass
class TrainedRun:
    """A finished run: its spec, weights (CPU tensors) and learning curve.

    ``history``: one dict per history point: ``step``, ``loss`` (mean training loss since
    the previous point) and the task's primary metric on the monitor split.
    """

    spec: RunSpec
    state: dict[str, torch.Tensor]
    history: list[dict[str, float]]
    cached: bool = False
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)
    _digest: str | None = field(default=None, repr=False, compare=False)

    def digest(self) -> str:
        """SHA-256 of the weights, computed here from the tensors (never read from a file):
        what a score was computed from (:meth:`reuse.study.training.cache.RunCache.memo`)."""
        if self._digest is None:
            self._digest = state_digest(self.state)
        return self._digest


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names, dtypes, shapes and bytes, in key order."""
    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k].detach().to("cpu").contiguous()
        h.update(f"{k}:{v.dtype}:{tuple(v.shape)}".encode())
        h.update(v.numpy().tobytes() if v.dtype != torch.bfloat16 else v.view(torch.int16).numpy().tobytes())
    return h.hexdigest()
