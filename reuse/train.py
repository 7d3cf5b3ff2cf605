"""Training with a run cache (PROTOCOL section 3).

A :class:`RunSpec` is the complete, hashable description of one training run; the
:class:`Runner` turns specs into trained weights, loading them from the on-disk cache
when the same spec (same hash, same :data:`TRAINER_VERSION`) was trained before, so
notebooks share runs instead of training twice. ``Runner.train_many`` is the one entry
point the experiments use: it may train a group of same-architecture specs together.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import data as rdata
from .gpu import (autocast, batch_indices, compiled, configure, precision_scope, prepare_model,
                  resolve_device)
from .gpu import precision as autocast_precision
from .metrics import PRIMARY, evaluate, loss
from .models import build_model

TRAINER_VERSION = "2"  # bump when a change to training alters the weights it produces
# 2: channels_last (and bf16 autocast where native) on the CPU too
MONITOR_SIZE = 512  # test images scored after each epoch for the history


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one training run's weights (its cache key).

    ``domain`` picks the side of ``pair`` to train on. ``init_seed`` fixes theta_0;
    ``order_seed`` the order of batches; ``data_seed`` which samples form the splits.
    ``init_from`` starts from another run's weights: the state keys in ``init_keys``
    (all when None) are copied from it, the rest come from theta_0. Parameters named in
    ``freeze`` are not updated (their BN running statistics still are).
    """

    architecture: str
    task: str
    pair: str
    domain: str = "source"
    init_seed: int = 0
    data_seed: int = 0
    order_seed: int = 0
    n_train: int | None = None
    shift: float = 0.0
    width: int = 8
    depth: int = 2
    epochs: int = 4
    batch_size: int = 32
    lr: float = 1e-2  # Adam, cosine-annealed to 0 over the run
    weight_decay: float = 0.0
    init_from: RunSpec | None = None
    init_keys: tuple[str, ...] | None = None
    freeze: tuple[str, ...] = ()

    def __post_init__(self):
        if self.domain not in ("source", "target"):
            raise ValueError(f"domain={self.domain!r}; allowed: 'source', 'target'")
        if self.pair not in rdata.PAIRS:
            raise ValueError(f"pair={self.pair!r}; allowed: {', '.join(rdata.PAIRS)}")
        if self.task not in rdata.TASKS:
            raise ValueError(f"task={self.task!r}; allowed: {', '.join(rdata.TASKS)}")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(f"epochs={self.epochs}, batch_size={self.batch_size}, lr={self.lr}:"
                             " all must be positive")

    @property
    def key(self) -> str:
        """sha256 of the spec and the trainer version."""
        blob = json.dumps({"spec": dataclasses.asdict(self), "trainer": TRAINER_VERSION},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def replace(self, **changes) -> RunSpec:
        return dataclasses.replace(self, **changes)


@dataclass
class TrainedRun:
    """A finished run: its spec, weights (CPU tensors) and per-epoch history."""

    spec: RunSpec
    state: dict[str, torch.Tensor]
    history: list[dict[str, float]]
    cached: bool = False
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


class Runner:
    """Trains specs on one device with a shared data memo and run cache.

    ``cache_dir=None`` disables the disk cache; runs stay memoised in memory either way.
    Cached runs are filed under the autocast precision they were trained in ('bf16' or
    'fp32', see :func:`reuse.gpu.configure`), so changing it retrains. ``compile`` runs
    the training forward through ``torch.compile``; a run whose compilation fails is
    retrained eagerly, with a warning, and so are the runner's later runs.
    """

    def __init__(self, device: str = "auto", cache_dir: str | Path | None = None,
                 data_dir: str | Path | None = None, deterministic: bool = True,
                 progress: bool = True, group_training: bool | None = None,
                 precision: str = "auto", compile: bool = False):
        self.device = resolve_device(device)
        configure(deterministic, precision)
        self.precision = autocast_precision(self.device)
        self.compile = compile
        # train same-shape specs together (reuse.group); by default only on CUDA, where 16
        # UNets together measured 3.6-4.3x faster on an H200; on the idle 2-core CPU,
        # 0.65-0.80x (benchmarks/README.md)
        self.group_training = self.device.type == "cuda" if group_training is None else group_training
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.data_dir = data_dir
        self.deterministic = deterministic
        self.progress = progress
        self.trained = 0  # runs actually trained (not loaded) by this runner
        self._classes: dict[tuple[str, str], int] = {}
        self._tensors: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._runs: dict[str, TrainedRun] = {}  # this runner's runs, also without a disk cache

    # --------------------------------------------------------------- data
    def split(self, pair: str, domain: str, task: str, split: str, data_seed: int = 0,
              shift: float = 0.0, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) of the first ``n`` samples of ``split``, on the device.

        Only the samples asked for are built (memoised): a prefix of one seeded
        permutation, so a smaller ``n`` is a subset of a larger one.
        """
        key = (pair, domain, task, split, data_seed, shift, n)
        if key not in self._tensors:
            sizes = {"n_train": n, "n_test": 0} if split == "train" else {"n_train": 0, "n_test": n}
            d = rdata.load_domain(pair, domain, seed=data_seed, shift=shift,
                                  data_dir=self.data_dir, **sizes)
            x, y = rdata.task_targets(d, task, split)
            self._tensors[key] = (x.to(self.device), y.to(self.device))
            self._classes[(pair, domain)] = d.n_classes
        return self._tensors[key]

    def n_outputs(self, spec: RunSpec) -> int:
        if (spec.pair, spec.domain) not in self._classes:
            self.split(spec.pair, spec.domain, spec.task, "test", spec.data_seed, spec.shift, 1)
        return rdata.n_outputs(spec.task, self._classes[(spec.pair, spec.domain)])

    def available(self, pair: str, domain: str, split: str = "train") -> int:
        """Samples the domain has in ``split``."""
        return rdata.domain_size(pair, domain, split, self.data_dir)

    # --------------------------------------------------------------- models
    def build(self, spec: RunSpec) -> nn.Module:
        """theta_0 of ``spec`` (seeded by ``init_seed``), on the CPU."""
        torch.manual_seed(spec.init_seed)
        return build_model(spec.architecture, spec.task, 1, self.n_outputs(spec),
                           spec.width, spec.depth)

    def model(self, run: TrainedRun) -> nn.Module:
        """A trained run's model on the device, in eval mode."""
        model = self.build(run.spec)
        model.load_state_dict(run.state)
        return prepare_model(model, self.device).eval()

    def initial_state(self, spec: RunSpec) -> dict[str, torch.Tensor]:
        """The weights training starts from: theta_0, with ``init_keys`` from the parent."""
        state = self.build(spec).state_dict()
        if spec.init_from is not None:
            parent = self.train(spec.init_from).state
            keys = parent.keys() if spec.init_keys is None else spec.init_keys
            unknown = [k for k in keys if k not in state]
            if unknown:
                raise ValueError(f"init_keys not in the model: {unknown[:5]}")
            state.update({k: parent[k].clone() for k in keys})
        return state

    # --------------------------------------------------------------- training
    def train(self, spec: RunSpec) -> TrainedRun:
        """Train ``spec`` or load it from the cache."""
        return self.train_many([spec])[0]

    def train_many(self, specs: list[RunSpec]) -> list[TrainedRun]:
        """Train (or load) every spec; results in input order; progress to stderr, a line per run.

        Cached runs load first. With ``group_training`` the missing ones are trained
        together per :func:`reuse.group.group_key` by :func:`reuse.group.train_group`
        (the same weights as :meth:`_fit` up to float rounding); a spec whose
        ``init_from`` parent is also missing waits for a later wave.
        """
        from .group import group_key, train_group  # group imports this module

        position = {}  # key -> index of its first occurrence, for the progress lines
        runs: dict[str, TrainedRun] = {}
        for i, spec in enumerate(specs):
            if spec.key in position:
                continue
            position[spec.key] = i
            run = self._load(spec)
            if run is not None:
                runs[spec.key] = run
                self._progress(i, len(specs), spec, "cached")
        missing = [specs[i] for key, i in position.items() if key not in runs]
        while missing:
            pending = {s.key for s in missing}
            wave = [s for s in missing if s.init_from is None or s.init_from.key not in pending]
            missing = [s for s in missing if s.key not in {w.key for w in wave}]
            groups: dict[tuple, list[RunSpec]] = {}
            for spec in wave:
                key = group_key(spec, self) if self.group_training else (spec.key,)
                groups.setdefault(key, []).append(spec)
            for members in groups.values():
                start = time.perf_counter()
                with precision_scope(self.precision):  # as filed, whatever another Runner set since
                    trained = train_group(self, members) if len(members) > 1 else [self._fit(members[0])]
                seconds = time.perf_counter() - start
                for run in trained:
                    run.seconds = seconds / len(trained)
                    self._store(run)
                    self.trained += 1
                    runs[run.spec.key] = run
                    self._progress(position[run.spec.key], len(specs), run.spec,
                                   f"trained in {run.seconds:.1f} s")
                if self.progress and len(members) > 1:
                    print(f"  group of {len(members)} trained together in {seconds:.1f} s",
                          file=sys.stderr, flush=True)
        return [runs[s.key] for s in specs]

    def _progress(self, i: int, n: int, spec: RunSpec, what: str) -> None:
        if self.progress:
            print(f"  run {i + 1}/{n} {spec.architecture}/{spec.task}/{spec.pair}/"
                  f"{spec.domain} init={spec.init_seed}: {what}", file=sys.stderr, flush=True)

    def _fit(self, spec: RunSpec) -> TrainedRun:
        """Train ``spec`` alone (no cache)."""
        if self.compile:
            try:
                return self._train_one(spec, compile_forward=True)
            except Exception as err:  # compilation errors surface in the first forward or backward
                warnings.warn(f"torch.compile failed ({type(err).__name__}: {err}); training "
                              "eagerly from here on", stacklevel=2)
                self.compile = False
        return self._train_one(spec, compile_forward=False)

    def _train_one(self, spec: RunSpec, compile_forward: bool) -> TrainedRun:
        model = self.build(spec)
        model.load_state_dict(self.initial_state(spec))
        model = prepare_model(model, self.device).train()
        frozen = set(spec.freeze)
        unknown = frozen - dict(model.named_parameters()).keys()
        if unknown:
            raise ValueError(f"freeze names unknown parameters: {sorted(unknown)[:5]}")
        params = [p for n, p in model.named_parameters() if n not in frozen]
        for n, p in model.named_parameters():
            p.requires_grad_(n not in frozen)
        x, y = self.split(spec.pair, spec.domain, spec.task, "train", spec.data_seed, spec.shift,
                          spec.n_train)
        n_monitor = min(MONITOR_SIZE, self.available(spec.pair, spec.domain, "test"))
        mx, my = self.split(spec.pair, spec.domain, spec.task, "test", spec.data_seed, spec.shift,
                            n_monitor)
        steps = spec.epochs * math.ceil(len(x) / spec.batch_size)
        opt = torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        gen = torch.Generator().manual_seed(spec.order_seed)
        forward = compiled(model, compile_forward)
        history = []
        for epoch in range(spec.epochs):
            total = torch.zeros((), device=self.device)
            for idx in batch_indices(len(x), spec.batch_size, self.device, gen):
                with autocast(self.device):
                    batch_loss = loss(spec.task, forward(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                batch_loss.backward()
                opt.step()
                sched.step()
                total += batch_loss.detach() * len(idx)
            metric = evaluate(model, mx, my, spec.task, self.n_outputs(spec),
                              metrics=(PRIMARY[spec.task],))[PRIMARY[spec.task]]
            history.append({"epoch": epoch + 1, "loss": float(total) / len(x), PRIMARY[spec.task]: metric})
        state = {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype)
                 .contiguous().clone() for k, v in model.state_dict().items()}
        return TrainedRun(spec, state, history)

    # --------------------------------------------------------------- cache
    def _path(self, spec: RunSpec) -> Path | None:
        if self.cache_dir is None:
            return None
        key = spec.key
        return self.cache_dir / self.precision / key[:2] / f"{key}.pt"

    def _load(self, spec: RunSpec) -> TrainedRun | None:
        if spec.key in self._runs:
            return self._runs[spec.key]
        path = self._path(spec)
        if path is None or not path.exists():
            return None
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if blob.get("key") != spec.key or not isinstance(blob.get("state"), dict):
                raise ValueError("key or state missing")
        except Exception as err:  # any unreadable entry is retrained, never used
            warnings.warn(f"corrupt cache entry {path} ({err}); retraining", stacklevel=2)
            return None
        run = TrainedRun(spec, blob["state"], blob["history"], cached=True,
                         seconds=blob.get("seconds", 0.0))
        self._runs[spec.key] = run
        return run

    def _store(self, run: TrainedRun) -> None:
        self._runs[run.spec.key] = run
        path = self._path(run.spec)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = {"key": run.spec.key, "spec": json.dumps(dataclasses.asdict(run.spec), default=str),
                "state": run.state, "history": run.history, "seconds": run.seconds}
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            torch.save(blob, tmp)
            os.replace(tmp, path)  # atomic: an interrupted write never leaves a half file
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
