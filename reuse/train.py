"""Training with a run cache (docs/protocol.md, section 3).

A :class:`RunSpec` is the complete, hashable description of one training run; the
:class:`Runner` turns specs into trained weights, loading them from the on-disk cache
when the same spec (same hash, same :data:`TRAINER_VERSION`, same precision and thread
count) was trained before, so notebooks share runs instead of training twice.
``Runner.train_many`` is the one entry point the experiments use.

One training algorithm, :func:`_fit`: a step is the task loss of a batch, its gradient
(zeroed for frozen parameters, plus weight decay), one Adam update and one cosine
learning-rate step. A single model runs it on its own parameters; a group of
same-shape models (CUDA only, :mod:`reuse.group`) runs the same step vmapped over
stacked parameters. Missing runs can train in ``workers`` processes of ``threads``
intra-op threads each; every run trains with the same thread count wherever it runs, so
its weights do not depend on how many workers there were.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import hashlib
import io
import json
import math
import multiprocessing
import os
import platform
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm
from torch import nn

from . import data as rdata
from . import files, group
from .files import FileLock
from .gpu import autocast, compiled, compute_scope, prepare_model, resolve_device, resolve_precision
from .metrics import PRIMARY, evaluate, loss
from .models import build_model

TRAINER_VERSION = "3"  # bump when a change to training alters the weights it produces
# 3: length in optimiser steps, equal-size batches, no conv bias before BN, denoising
#    auto-encoder, image_size in the spec
MONITOR_SIZE = 256  # test images scored at each history point
HISTORY_POINTS = 8  # evenly spaced points of the learning curve each run records


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one training run's weights (its cache key).

    ``domain`` picks the side of ``pair`` to train on. ``init_seed`` fixes theta_0;
    ``order_seed`` the order of batches; ``data_seed`` which samples form the splits and
    ``block`` which disjoint run of ``n_train`` of them this run trains on (the
    same-domain twin trains on block 1). ``steps`` optimiser steps of ``batch_size``
    samples (the last partial batch of each pass over the data is dropped, so every step
    sees a full batch). ``init_from`` starts from another run's weights: the state keys
    in ``init_keys`` (all when None) are copied from it, the rest come from theta_0.
    Parameters named in ``freeze`` are not updated (their BN running statistics still are).
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
    shift: float = 0.0
    image_size: int = rdata.IMAGE_SIZE
    width: int = 8
    depth: int = 2
    steps: int = 400
    batch_size: int = 32
    lr: float = 3e-3  # Adam, cosine-annealed to 0 over the run
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
        if self.steps < 1 or self.batch_size < 2 or not self.lr > 0:
            raise ValueError(f"steps={self.steps}, batch_size={self.batch_size}, lr={self.lr}: "
                             "steps and lr must be positive, batch_size >= 2 (BatchNorm)")
        if self.image_size % 2 ** self.depth:
            raise ValueError(f"image_size={self.image_size} is not divisible by 2**depth = "
                             f"{2 ** self.depth}")

    @property
    def key(self) -> str:
        """sha256 of the spec and the trainer version."""
        blob = json.dumps({"spec": dataclasses.asdict(self), "trainer": TRAINER_VERSION},
                          sort_keys=True, default=str)
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


class Runner:
    """Trains specs on one device with a shared data memo and run cache.

    ``cache_dir=None`` disables the disk cache; runs stay memoised in memory either way.
    ``precision`` ('fp32', 'bf16' or 'auto'), ``threads`` (intra-op threads while training)
    and ``deterministic`` belong to this runner: it sets them around its own work and
    restores them after, and files cached runs under ``<precision>-t<threads>`` (runs
    trained in a vmapped group under ``...-grouped``), so changing either retrains.
    ``workers > 1`` trains missing runs in that many processes, ``cluster`` (an executor
    such as a Dask client's ``get_executor()``) on that cluster's workers (CPU only; both
    share the disk cache, under per-entry file locks). ``compile``
    runs the training forward through ``torch.compile``; a run whose compilation fails
    is retrained eagerly, with a warning, and so are the runner's later runs.
    """

    def __init__(self, device: str = "auto", cache_dir: str | Path | None = None,
                 data_dir: str | Path | None = None, *, precision: str = "fp32", threads: int = 1,
                 workers: int = 1, deterministic: bool = True, progress: bool = True,
                 group_training: bool | None = None, compile: bool = False, cluster=None):
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        if threads < 1 or workers < 1:
            raise ValueError(f"threads={threads}, workers={workers}; both must be >= 1")
        if (workers > 1 or cluster is not None) and self.device.type != "cpu":
            raise ValueError(f"workers={workers}, cluster={cluster!r}: training elsewhere needs "
                             f"device='cpu'; got {self.device}")
        self.threads, self.workers = threads, workers
        self.deterministic = deterministic
        self.compile = compile
        # train same-shape specs together (reuse.group); by default only on CUDA, where 16
        # UNets together measured 3.6-4.3x faster on an H200; on the idle 2-core CPU,
        # 0.65-0.80x (benchmarks/README.md)
        self.group_training = self.device.type == "cuda" if group_training is None else group_training
        if self.group_training and (workers > 1 or cluster is not None):
            raise ValueError("group_training and workers > 1 (or a cluster) exclude each other")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.data_dir = data_dir
        self.progress = progress
        self.trained = 0  # runs actually trained (not loaded) by this runner
        self._classes: dict[tuple[str, str], int] = {}
        self._tensors: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._runs: dict[str, TrainedRun] = {}  # this runner's runs, also without a disk cache
        self._executor, self._owns_executor = cluster, False
        self._warned_read_only = False
        self._unreadable: set[str] = set()

    @classmethod
    def for_profile(cls, profile, device: str = "auto", cache_dir: str | Path | None = None,
                    data_dir: str | Path | None = None, **kwargs) -> Runner:
        """A runner with the profile's precision, threads, workers and determinism."""
        resolved = resolve_device(device)
        settings = dict(precision=profile.precision, threads=profile.threads,
                        workers=profile.workers if resolved.type == "cpu" else 1,
                        deterministic=profile.deterministic)
        return cls(resolved, cache_dir, data_dir, **{**settings, **kwargs})

    def settings(self) -> dict:
        """What made this runner's numbers, for provenance: what fixes the rounding, and the
        data (folder and SHA-256 of each file read)."""
        return {"device": str(self.device), "precision": self.precision, "threads": self.threads,
                "workers": self.workers, "deterministic": self.deterministic,
                "group_training": self.group_training, "data": rdata.data_provenance(self.data_dir)}

    # --------------------------------------------------------------- data
    def split(self, pair: str, domain: str, task: str, split: str, data_seed: int = 0,
              shift: float = 0.0, n: int | None = None, image_size: int = rdata.IMAGE_SIZE,
              block: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) of ``n`` samples of ``split`` (block ``block``), on the device.

        Only the samples asked for are built (memoised): block 0 is a prefix of one
        seeded permutation, so a smaller ``n`` is a subset of a larger one.
        """
        key = (pair, domain, task, split, data_seed, shift, n, image_size, block)
        if key not in self._tensors:
            sizes = {"n_train": n, "n_test": 0} if split == "train" else {"n_train": 0, "n_test": n}
            d = rdata.load_domain(pair, domain, seed=data_seed, shift=shift, data_dir=self.data_dir,
                                  image_size=image_size, block=block if split == "train" else 0,
                                  **sizes)
            x, y = rdata.task_targets(d, task, split)
            self._tensors[key] = (x.to(self.device), y.to(self.device))
            self._classes[(pair, domain)] = d.n_classes
        return self._tensors[key]

    def train_split(self, spec: RunSpec) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples ``spec`` trains on."""
        return self.split(spec.pair, spec.domain, spec.task, "train", spec.data_seed, spec.shift,
                          spec.n_train, spec.image_size, spec.block)

    def monitor_split(self, spec: RunSpec) -> tuple[torch.Tensor, torch.Tensor]:
        """The test samples ``spec``'s learning curve is scored on."""
        n = min(MONITOR_SIZE, self.available(spec.pair, spec.domain, "test"))
        return self.split(spec.pair, spec.domain, spec.task, "test", spec.data_seed, spec.shift, n,
                          spec.image_size)

    def n_outputs(self, spec: RunSpec) -> int:
        if (spec.pair, spec.domain) not in self._classes:
            self.split(spec.pair, spec.domain, spec.task, "test", spec.data_seed, spec.shift, 1,
                       spec.image_size)
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

    def initial_state(self, spec: RunSpec, parent: dict[str, torch.Tensor] | None = None
                      ) -> dict[str, torch.Tensor]:
        """The weights training starts from: theta_0, with ``init_keys`` from the parent
        (``parent``: its trained state when known, else it is trained or loaded)."""
        state = self.build(spec).state_dict()
        if spec.init_from is not None:
            parent = self.train(spec.init_from).state if parent is None else parent
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
        """Train (or load) every spec; results in input order; a progress bar over the runs on stderr.

        Cached runs load first. The missing ones train in waves (a spec whose
        ``init_from`` parent is also missing waits for a later wave): in worker processes
        when ``workers > 1``, in vmapped groups (:func:`reuse.group.group_key`) when
        ``group_training``, else one after another.
        """
        position = {}  # key -> index of its first occurrence
        runs: dict[str, TrainedRun] = {}
        for i, spec in enumerate(specs):
            if spec.key in position:
                continue
            position[spec.key] = i
            run = self._load(spec)
            if run is not None:
                runs[spec.key] = run
        missing = [specs[i] for key, i in position.items() if key not in runs]
        bar = tqdm(total=len(missing), desc=f"training ({len(position) - len(missing)} cached)",
                   unit="run", file=sys.stderr, mininterval=2.0, disable=not (self.progress and missing))
        with bar:
            while missing:
                pending = {s.key for s in missing}
                wave = [s for s in missing if s.init_from is None or s.init_from.key not in pending]
                missing = [s for s in missing if s.key not in {w.key for w in wave}]
                for run in self._train_wave(wave, runs):
                    self._runs[run.spec.key] = run
                    self.trained += not run.cached  # another process may have trained it meanwhile
                    runs[run.spec.key] = run
                    bar.update()
        return [runs[s.key] for s in specs]

    def _train_wave(self, wave: list[RunSpec], runs: dict[str, TrainedRun]):
        """Yield the runs of ``wave`` (specs whose parents are all done), each trained under
        its cache lock and stored, or loaded if another process finished it meanwhile."""
        parents = {s.key: runs[s.init_from.key] if s.init_from.key in runs else self.train(s.init_from)
                   for s in wave if s.init_from is not None}
        states = {k: run.state for k, run in parents.items()}
        if self.executor is not None and len(wave) > 1:
            yield from self._train_elsewhere(wave, states)
            return
        groups: dict[tuple, list[RunSpec]] = {}
        for spec in wave:
            key = group.group_key(spec, self) if self.group_training else (spec.key,)
            groups.setdefault(key, []).append(spec)
        for members in groups.values():
            # a run started from grouped weights is filed with the grouped runs too
            lineage = any(parents.get(s.key) is not None and parents[s.key].extra.get("grouped")
                          for s in members)
            yield from self.obtain(members, [states.get(s.key) for s in members], lineage)

    def obtain(self, members: list[RunSpec], parents: list, grouped_lineage: bool = False
               ) -> list[TrainedRun]:
        """Train ``members`` (one group) and store them, holding each one's cache lock: an
        entry that another process stored while this one waited is loaded instead, so
        concurrent runs on one cache train every model once."""
        with self._locks(members):
            ready = {s.key: self._load(s) for s in members}
            todo = [(s, p) for s, p in zip(members, parents) if ready[s.key] is None]
            if todo:
                start = time.perf_counter()
                trained = self.fit([s for s, _ in todo], [p for _, p in todo])
                for run in trained:
                    run.seconds = (time.perf_counter() - start) / len(trained)
                    run.extra["grouped"] = run.extra["group_size"] > 1 or grouped_lineage
                    self._store(run)
                    ready[run.spec.key] = run
        return [ready[s.key] for s in members]

    @contextlib.contextmanager
    def _locks(self, specs: list[RunSpec]):
        """File locks on the specs' cache entries (in key order, so two processes never wait
        on each other crosswise); none without a cache or where the cache is read-only."""
        paths = sorted({str(p) for s in specs for p in [self._path(s)] if p is not None})
        with contextlib.ExitStack() as stack:
            for path in paths:
                try:
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                    stack.enter_context(FileLock(path + ".lock"))
                except files.SymlinkError as err:  # a link planted in a shared cache is never followed
                    warnings.warn(f"{err}; this entry is trained without its lock", stacklevel=3)
                except OSError:
                    self._read_only(Path(path).parent)
                    break
            yield

    def _train_elsewhere(self, wave: list[RunSpec], parents: dict):
        """Train ``wave`` through :attr:`executor` (worker processes or a Dask cluster), one
        run per task; each task obtains its run under the shared cache's locks."""
        # absolute folders: a worker's working directory is not this process's
        config = {"data_dir": _absolute(self.data_dir), "precision": self.precision, "threads": self.threads,
                  "deterministic": self.deterministic, "compile": self.compile,
                  "cache_dir": _absolute(self.cache_dir)}
        futures = [self.executor.submit(_obtain_remote, config, spec, _pack(parents.get(spec.key)))
                   for spec in wave]
        for future in futures:
            run, state = future.result()
            run.state = _unpack(state)
            yield run

    @property
    def executor(self):
        """Where runs train besides this process: a pool of ``workers`` processes (started on
        first use, kept for the runner's life: starting a worker costs seconds), or the
        executor passed as ``cluster`` (e.g. a Dask client's); None to train here."""
        if self._executor is None and self.workers > 1:
            # spawn, not fork: a forked child of a process that has run OpenMP can deadlock
            self._executor = ProcessPoolExecutor(self.workers, multiprocessing.get_context("spawn"))
            self._owns_executor = True
            atexit.register(self.close)  # workers exit quietly with their parent
        return self._executor

    def close(self) -> None:
        """Stop the worker processes this runner started, if any (they also stop when the
        process exits); a cluster passed in belongs to the caller."""
        if self._executor is not None and self._owns_executor:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None

    def fit(self, specs: list[RunSpec], parents: list | None = None) -> list[TrainedRun]:
        """Train ``specs`` (one group when several) within this runner's compute settings;
        no cache. A failing ``torch.compile`` retrains eagerly, with a warning."""
        parents = parents or [None] * len(specs)
        with compute_scope(self.deterministic, self.threads):
            if self.compile and len(specs) == 1:
                try:
                    return _fit(self, specs, parents, compile_forward=True)
                except Exception as err:  # compilation errors surface in the first forward or backward
                    warnings.warn(f"torch.compile failed ({type(err).__name__}: {err}); training "
                                  "eagerly from here on", stacklevel=2)
                    self.compile = False
            return _fit(self, specs, parents)

    # --------------------------------------------------------------- cache
    def memo(self, parts: dict, compute) -> list[float]:
        """``compute()`` (a list of floats), stored under ``cache/scores`` by the sha256 of
        ``parts``, so notebooks that score the same swaps share the work. Without a cache
        directory, or for an unreadable entry, it is computed."""
        if self.cache_dir is None:
            return compute()
        key = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
        path = self.cache_dir / "scores" / self._folder() / key[:2] / f"{key}.json"
        try:
            values = json.loads(path.read_text())["values"]
            if isinstance(values, list) and all(isinstance(v, (int, float)) or v is None for v in values):
                return [float("nan") if v is None else float(v) for v in values]
        except (OSError, ValueError, KeyError, TypeError):
            pass
        values = [float(v) for v in compute()]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            record = {"parts": parts, "values": [v if math.isfinite(v) else None for v in values]}
            files.write_atomic(path, json.dumps(record, default=str))
        except OSError as err:  # a full disk: computed, not stored
            self._not_stored(err, path)
        return values

    def _folder(self, grouped: bool = False) -> str:
        return f"{self.precision}-t{self.threads}" + ("-grouped" if grouped else "")

    def _path(self, spec: RunSpec, grouped: bool = False) -> Path | None:
        if self.cache_dir is None:
            return None
        key = spec.key
        return self.cache_dir / self._folder(grouped) / key[:2] / f"{key}.pt"

    def _load(self, spec: RunSpec) -> TrainedRun | None:
        if spec.key in self._runs:
            return self._runs[spec.key]
        for grouped in (False, True) if self.group_training else (False,):
            path = self._path(spec, grouped)
            if path is None or not path.exists() or spec.key in self._unreadable:
                continue
            try:
                blob = torch.load(path, map_location="cpu", weights_only=True)
                self._check_entry(spec, blob)
            except PermissionError as err:  # another user's entry: train, leave theirs alone
                self._unreadable.add(spec.key)
                warnings.warn(f"cannot read cache entry {path} ({err.strerror}); training this run "
                              "without replacing the entry", stacklevel=2)
                continue
            except Exception as err:  # any unreadable or wrong entry is retrained, never used
                bad = path.with_suffix(".bad")
                try:
                    os.replace(path, bad)
                    moved = f"moved to {bad.name}"
                except OSError:
                    moved = "left in place (the cache is read-only)"
                warnings.warn(f"bad cache entry {path} ({err}); {moved}, retraining", stacklevel=2)
                continue
            run = TrainedRun(spec, blob["state"], blob["history"], cached=True,
                             seconds=blob.get("seconds", 0.0), extra=blob.get("extra", {}))
            self._runs[spec.key] = run
            return run
        return None

    def _check_entry(self, spec: RunSpec, blob) -> None:
        """Raise ValueError unless ``blob`` is a complete, finite run of ``spec``."""
        if not isinstance(blob, dict) or blob.get("key") != spec.key:
            raise ValueError("key missing or for another spec")
        state, history = blob.get("state"), blob.get("history")
        expected = self.build(spec).state_dict()
        if not isinstance(state, dict) or state.keys() != expected.keys():
            raise ValueError("state keys differ from the model's")
        for k, v in expected.items():
            if not isinstance(state[k], torch.Tensor) or state[k].shape != v.shape:
                raise ValueError(f"{k}: shape differs from the model's {tuple(v.shape)}")
            if state[k].is_floating_point() and not torch.isfinite(state[k]).all():
                raise ValueError(f"{k} has non-finite values")
        if not isinstance(history, list) or not history:
            raise ValueError("history missing")

    def _store(self, run: TrainedRun) -> None:
        self._runs[run.spec.key] = run
        path = self._path(run.spec, run.extra.get("grouped", False))
        if path is None or run.spec.key in self._unreadable:
            return
        blob = {"key": run.spec.key, "spec": json.dumps(dataclasses.asdict(run.spec), default=str),
                "state": run.state, "history": run.history, "seconds": run.seconds,
                "extra": run.extra}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        except OSError:
            self._read_only(path.parent)
            return
        os.close(fd)
        try:
            buffer = io.BytesIO()
            torch.save(blob, buffer)  # in memory first: a full disk fails the write with ENOSPC, not in torch
            files.write_bytes(tmp, buffer.getbuffer())
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; follow the umask
            os.replace(tmp, path)  # atomic: an interrupted write never leaves a half file
        except OSError as err:
            self._not_stored(err, path)
            return
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self._log(run, path)

    def _log(self, run: TrainedRun, path: Path) -> None:
        """One JSON line per stored training in ``<cache>/trained.log``: which process trained
        what, so a shared cache shows that each run was trained once."""
        line = json.dumps({"key": run.spec.key, "run": run.spec.describe(), "file": str(path.relative_to(
            self.cache_dir)), "seconds": round(run.seconds, 3), "host": platform.node(), "pid": os.getpid(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
        try:  # one short append: atomic on POSIX; a link is refused, never followed
            files.append_line(self.cache_dir / "trained.log", line)
        except OSError as err:
            warnings.warn(f"{files.describe(err, 'trained.log')}; the run is stored, not logged", stacklevel=3)

    def _not_stored(self, err: OSError, path: Path) -> None:
        if not self._warned_read_only:
            self._warned_read_only = True
            warnings.warn(f"the run cache {self.cache_dir}: {files.describe(err, str(path))}; what it holds is "
                          "still used, but runs and scores computed now are kept in memory only", stacklevel=3)

    def _read_only(self, folder: Path) -> None:
        if not self._warned_read_only:
            self._warned_read_only = True
            warnings.warn(f"the run cache {self.cache_dir} cannot be written ({folder}): cached runs "
                          "are still used, but runs trained now are kept in memory only", stacklevel=3)


def _absolute(folder: str | Path | None) -> str | None:
    return None if folder is None else str(Path(folder).resolve())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ----------------------------------------------------------------------------- workers
_WORKERS: dict = {}  # per worker process: a runner per configuration


def _obtain_remote(config: dict, spec: RunSpec, parent: bytes | None) -> tuple[TrainedRun, bytes]:
    """Obtain one run in a worker process (a pool's or a Dask cluster's): load it from the
    shared cache, or train and store it under the entry's lock."""
    key = json.dumps(config, sort_keys=True, default=str)
    if key not in _WORKERS:
        torch.set_num_threads(config["threads"])
        _WORKERS[key] = Runner("cpu", config["cache_dir"], config["data_dir"], precision=config["precision"],
                               threads=config["threads"], deterministic=config["deterministic"],
                               compile=config["compile"], progress=False, group_training=False)
    (run,) = _WORKERS[key].obtain([spec], [_unpack(parent)])
    state, run = run.state, dataclasses.replace(run, state={})
    return run, _pack(state)


def _pack(state: dict | None) -> bytes | None:
    """A state dict as bytes: pickled tensors would travel as one shared file descriptor
    each, and hundreds of queued runs exhaust the process's descriptors."""
    if state is None:
        return None
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _unpack(blob: bytes | None) -> dict | None:
    return None if blob is None else torch.load(io.BytesIO(blob), weights_only=True)


# ----------------------------------------------------------------------------- the algorithm
def _history_steps(steps: int) -> list[int]:
    """The steps after which the learning curve is scored: HISTORY_POINTS, evenly spaced."""
    return sorted({max(1, round(steps * (i + 1) / HISTORY_POINTS)) for i in range(HISTORY_POINTS)})


def _batches(n: int, batch_size: int, device: torch.device, generator: torch.Generator):
    """Endless index batches of ``min(batch_size, n)`` samples: one seeded permutation per
    pass over the data, its last partial batch dropped (every step sees a full batch)."""
    size = min(batch_size, n)
    while True:
        order = torch.randperm(n, generator=generator).to(device)
        for start in range(0, n - size + 1, size):
            yield order[start:start + size]


def _fit(runner: Runner, specs: list[RunSpec], parents: list, compile_forward: bool = False
         ) -> list[TrainedRun]:
    """The training algorithm, for one spec or a group of same-shape specs (vmapped).

    Per member: theta_0 from ``runner.initial_state``; batches from its own ``order_seed``
    generator; Adam over its parameters (Adam is elementwise, so one Adam over stacked
    parameters is one Adam per member); frozen parameters get zero gradients (with zero
    gradients from the start, Adam's moments and update stay 0; weight decay is added to
    the gradient here, masked the same way); BN running statistics updated per member.
    """
    first, n = specs[0], len(specs)
    if n > 1 and len({group.group_key(s, runner) for s in specs}) > 1:
        raise ValueError("specs of different groups cannot train together")
    device, task = runner.device, first.task
    model = runner.build(first)
    states = [runner.initial_state(s, p) for s, p in zip(specs, parents)]
    pnames = [k for k, _ in model.named_parameters()]
    for s in specs:
        unknown = set(s.freeze) - set(pnames)
        if unknown:
            raise ValueError(f"freeze names unknown parameters: {sorted(unknown)[:5]}")
    data = [runner.train_split(s) for s in specs]
    n_train = len(data[0][0])
    if n == 1:
        model.load_state_dict(states[0])
        model = prepare_model(model, device).train()
        params = dict(model.named_parameters())
        forward = compiled(model, compile_forward)

        def losses(xb, yb):
            return loss(task, forward(xb), yb).unsqueeze(0)
    else:
        model = model.to(device).train()
        params, buffers = group.stack(states, model, device)
        batched = group.batched_loss(model, task)

        def losses(xb, yb):
            return batched(params, buffers, xb, yb)
    leaves = [params[k].requires_grad_(True) for k in pnames]
    shape = [n] if n > 1 else []
    masks = {}
    for m, s in enumerate(specs):
        for name in s.freeze:
            masks.setdefault(name, torch.ones(shape, device=device))[m if n > 1 else ...] = 0.0
    masks = {k: v.view(*v.shape, *[1] * (params[k].dim() - v.dim())) for k, v in masks.items()}
    # fused: one kernel for all parameters, 0.5 instead of 1.2 ms of a 15 ms UNet step on 1 thread
    opt = torch.optim.Adam(leaves, lr=first.lr, weight_decay=0.0, fused=device.type in ("cpu", "cuda"))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, first.steps)
    streams = [_batches(n_train, first.batch_size, device, torch.Generator().manual_seed(s.order_seed))
               for s in specs]
    monitor = [runner.monitor_split(s) for s in specs]
    metric, n_out = PRIMARY[task], runner.n_outputs(first)
    checkpoints = set(_history_steps(first.steps))
    histories: list[list[dict]] = [[] for _ in specs]
    total, count = torch.zeros(n, device=device), 0
    for step in range(1, first.steps + 1):
        idxs = [next(stream) for stream in streams]
        if n == 1:
            xb, yb = data[0][0][idxs[0]], data[0][1][idxs[0]]
        else:
            xb = torch.stack([d[0][i] for d, i in zip(data, idxs)])
            yb = torch.stack([d[1][i] for d, i in zip(data, idxs)])
        with autocast(device, runner.precision):
            batch_losses = losses(xb, yb)
        opt.zero_grad(set_to_none=True)
        batch_losses.sum().backward()
        with torch.no_grad():
            for k in pnames:
                g, p = params[k].grad, params[k]
                if k in masks:
                    g.mul_(masks[k])
                if first.weight_decay:
                    g.add_(p * masks[k] if k in masks else p, alpha=first.weight_decay)
        opt.step()
        sched.step()
        total += batch_losses.detach()
        count += 1
        if step in checkpoints:
            if n == 1:
                scores = [evaluate(model, *monitor[0], task, n_out, metrics=(metric,),
                                   precision=runner.precision)[metric]]
                model.train()
            else:
                scores = group.monitor_scores(model, params, buffers, monitor, task, n_out, metric,
                                              runner.precision)
            for m in range(n):
                histories[m].append({"step": step, "loss": float(total[m]) / count, metric: scores[m]})
            total, count = torch.zeros(n, device=device), 0
    if n == 1:
        finals = [model.state_dict()]
    else:
        finals = [{k: (params[k] if k in params else buffers[k])[m] for k in model.state_dict()}
                  for m in range(n)]
    return [TrainedRun(s, {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype)
                           .contiguous().clone() for k, v in final.items()}, h,
                       extra={"group_size": n, "threads": runner.threads, "precision": runner.precision})
            for s, final, h in zip(specs, finals, histories)]
