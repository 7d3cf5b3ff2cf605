"""The runner: turns run specs into trained weights, through the run cache.

:class:`Runner` owns the device, the compute settings that fix rounding (precision,
threads, determinism), a memo of the data it has loaded, and a :class:`~reuse.study.training.cache.RunCache`.
``Runner.train_many`` is the one entry point the experiments use: cached runs load, the
missing ones train, one after another, in worker processes (``workers`` processes of
``threads`` intra-op threads each: every run trains with the same thread count wherever
it runs, so its weights do not depend on how many workers there were), on a Dask cluster,
or in vmapped groups on CUDA. The training algorithm itself is :func:`reuse.study.training.fit.fit`.
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import io
import json
import multiprocessing
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from reuse.toolkit.gpu import compute_scope, prepare_model, resolve_device, resolve_precision

from . import data as rdata
from . import group, pretrained, wheel_sets
from .cache import RunCache, compute_class
from .fit import fit
from .models import build_model
from .spec import RunSpec, TrainedRun

__all__ = ["MONITOR_SIZE", "RunSpec", "Runner", "TrainedRun"]

MONITOR_SIZE = 256  # test images scored at each history point
MONITOR_WHEEL = 100  # ... of a wheel set: the first 100 of the spec's n_test (notebook 07's curve)


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
        self.precision = check_settings(precision, threads, workers, self.device)
        if (workers > 1 or cluster is not None) and self.device.type != "cpu":
            raise ValueError(f"workers={workers}, cluster={cluster!r}: training elsewhere needs "
                             f"device='cpu'; got {self.device}")
        self.threads, self.workers = threads, workers
        self.deterministic = deterministic
        self.compile = compile
        # train same-shape specs together (reuse.study.training.group); by default only on CUDA, where 16
        # UNets together measured 3.6-4.3x faster on an H200; on the idle 2-core CPU,
        # 0.65-0.80x (benchmarks/README.md)
        self.group_training = self.device.type == "cuda" if group_training is None else group_training
        if self.group_training and (workers > 1 or cluster is not None):
            raise ValueError("group_training and workers > 1 (or a cluster) exclude each other")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        # the data is part of every cache key: a run trained on other files is never loaded.
        # Read once, here, and hashed from those bytes: a file replaced during the run
        # changes neither what trains nor the key it is stored under
        self.fashion = rdata.read_fashion(data_dir)
        self.data = rdata.data_provenance(self.fashion)
        self.cache = RunCache(self.cache_dir, _data_fingerprint(self.data),
                              compute_class(self.device, self.precision, threads), self._check_entry,
                              _inputs)
        self.progress = progress
        self.trained = 0  # runs actually trained (not loaded) by this runner
        self._classes: dict[tuple[str, str], int] = {}
        self._tensors: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._runs: dict[str, TrainedRun] = {}  # this runner's runs, also without a disk cache
        self._aligned: dict[tuple[str, str], dict[str, torch.Tensor]] = {}  # parent_state's memo
        self._executor, self._owns_executor = cluster, False

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
                "group_training": self.group_training, "cache_folder": self.cache.compute,
                "data": self.data, "data_sha256": self.cache.data, "training_code_sha256": self.cache.code}

    # --------------------------------------------------------------- data
    def split(self, pair: str, domain: str, task: str, split: str, data_seed: int = 0,
              shift: float = 0.0, n: int | None = None, image_size: int = rdata.IMAGE_SIZE,
              block: int = 0, channels: int = 1, n_test: int | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) of ``n`` samples of ``split`` (block ``block``), on the device;
        grayscale inputs repeated to ``channels`` channels. ``n_test``: a wheel set's test
        images, drawn before its training blocks (``RunSpec.n_test``).

        Only the samples asked for are built (memoised): block 0 is a prefix of one
        seeded permutation, so a smaller ``n`` is a subset of a larger one.
        """
        key = (pair, domain, task, split, data_seed, shift, n, image_size, block, channels, n_test)
        if key not in self._tensors:
            sizes = {"n_train": n, "n_test": n_test or 0} if split == "train" else {"n_train": 0, "n_test": n}
            d = rdata.load_domain(pair, domain, seed=data_seed, shift=shift, data_dir=self.fashion,
                                  image_size=image_size, block=block if split == "train" else 0,
                                  **sizes)
            x, y = rdata.task_targets(d, task, split)
            if channels > 1:
                x = x.expand(-1, channels, -1, -1).contiguous()
            self._tensors[key] = (x.to(self.device), y.to(self.device))
            self._classes[(pair, domain)] = d.n_classes
        return self._tensors[key]

    def train_split(self, spec: RunSpec) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples ``spec`` trains on."""
        return self.split(spec.pair, spec.domain, spec.task, "train", spec.data_seed, spec.shift,
                          spec.n_train, spec.image_size, spec.block, spec.channels, spec.n_test)

    def monitor_split(self, spec: RunSpec) -> tuple[torch.Tensor, torch.Tensor]:
        """The test samples ``spec``'s learning curve is scored on."""
        if spec.n_test is not None:  # a wheel set: the first of the spec's own test split
            x, y = self.split(spec.pair, spec.domain, spec.task, "test", spec.data_seed, spec.shift,
                              spec.n_test, spec.image_size, channels=spec.channels)
            return x[:MONITOR_WHEEL], y[:MONITOR_WHEEL]
        n = min(MONITOR_SIZE, self.available(spec.pair, spec.domain, "test"))
        return self.split(spec.pair, spec.domain, spec.task, "test", spec.data_seed, spec.shift, n,
                          spec.image_size, channels=spec.channels)

    def n_outputs(self, spec: RunSpec) -> int:
        if (spec.pair, spec.domain) not in self._classes:
            self.split(spec.pair, spec.domain, spec.task, "test", spec.data_seed, spec.shift,
                       spec.n_test or 1, spec.image_size)
        return rdata.n_outputs(spec.task, self._classes[(spec.pair, spec.domain)])

    def available(self, pair: str, domain: str, split: str = "train") -> int:
        """Samples the domain has in ``split``."""
        return rdata.domain_size(pair, domain, split, self.fashion)

    # --------------------------------------------------------------- models
    def build(self, spec: RunSpec) -> nn.Module:
        """theta_0 of ``spec`` (seeded by ``init_seed``), on the CPU."""
        torch.manual_seed(spec.init_seed)
        return build_model(spec.architecture, spec.task, spec.channels, self.n_outputs(spec),
                           spec.width, spec.depth)

    def model(self, run: TrainedRun) -> nn.Module:
        """A trained run's model on the device, in eval mode."""
        model = self.build(run.spec)
        model.load_state_dict(run.state)
        return prepare_model(model, self.device).eval()

    def initial_state(self, spec: RunSpec, parent: dict[str, torch.Tensor] | None = None
                      ) -> dict[str, torch.Tensor]:
        """The weights training starts from: theta_0, with ``init_keys`` from the pretrained
        weights ``spec`` names, or from the parent (``parent``: its trained state when known,
        else it is trained or loaded)."""
        state = self.build(spec).state_dict()
        if spec.pretrained is not None:
            parent = pretrained.state(spec.pretrained)
        elif spec.init_from is not None:
            parent = self.parent_state(spec) if parent is None else parent
        else:
            return state
        keys = parent.keys() if spec.init_keys is None else spec.init_keys
        unknown = [k for k in keys if k not in state]
        if unknown:
            raise ValueError(f"init_keys not in the model: {unknown[:5]}")
        state.update({k: parent[k].clone() for k in keys})
        return state

    def parent_state(self, spec: RunSpec, parent: TrainedRun | None = None) -> dict[str, torch.Tensor]:
        """The weights ``spec`` takes ``init_keys`` from: its ``init_from`` run's (``parent``
        when already at hand), with their channels permuted onto the ``align_to`` run's by
        weight matching (Ainsworth et al. 2023) when it names one (memoised per pair of runs)."""
        parent = self.train(spec.init_from) if parent is None else parent
        if spec.align_to is None:
            return parent.state
        key = (spec.init_from.key, spec.align_to.key)
        if key not in self._aligned:
            from reuse.toolkit.alignment import apply_permutation, mismatched, permutation_spec, weight_matching

            target = self.train(spec.align_to).state
            perm_spec = permutation_spec(self.build(spec))
            perms = weight_matching(perm_spec, parent.state, target, ignore=mismatched(parent.state, target))
            self._aligned[key] = apply_permutation(perm_spec, perms, parent.state)
        return self._aligned[key]

    # --------------------------------------------------------------- training
    def train(self, spec: RunSpec) -> TrainedRun:
        """Train ``spec`` or load it from the cache."""
        return self.train_many([spec])[0]

    def train_many(self, specs: list[RunSpec]) -> list[TrainedRun]:
        """Train (or load) every spec; results in input order; a progress bar over the runs on stderr.

        Cached runs load first. The missing ones train in waves (a spec whose
        ``init_from`` parent is also missing waits for a later wave): in worker processes
        when ``workers > 1``, in vmapped groups (:func:`reuse.study.training.group.group_key`) when
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
                wave = [s for s in missing if all(p is None or p.key not in pending
                                                  for p in (s.init_from, s.align_to))]
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
        states = {s.key: self.parent_state(s, parents[s.key]) for s in wave if s.init_from is not None}
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
        with self.cache.locks(members):
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

    def _train_elsewhere(self, wave: list[RunSpec], parents: dict):
        """Train ``wave`` through :attr:`executor` (worker processes or a Dask cluster), one
        run per task; each task obtains its run under the shared cache's locks."""
        config = self._worker_config()
        futures = [self.executor.submit(_obtain_remote, config, spec, _pack(parents.get(spec.key)))
                   for spec in wave]
        for future in futures:
            run, state = future.result()
            run.state = _unpack(state)
            yield run

    def _worker_config(self) -> dict:
        """What a worker process builds its runner from (:func:`_obtain_remote`), with the hash
        of this runner's data, which the worker's own reading must give."""
        # absolute folders: a worker's working directory is not this process's
        return {"data_dir": _absolute(self.fashion.folder), "data_sha256": self.cache.data,
                "precision": self.precision, "threads": self.threads, "deterministic": self.deterministic,
                "compile": self.compile, "cache_dir": _absolute(self.cache_dir)}

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
        if len(specs) > 1 and len({group.group_key(s, self) for s in specs}) > 1:
            raise ValueError("specs of different groups cannot train together")
        with compute_scope(self.deterministic, self.threads):
            if self.compile and len(specs) == 1:
                try:
                    return self._fit(specs, parents, compile_forward=True)
                except Exception as err:  # compilation errors surface in the first forward or backward
                    warnings.warn(f"torch.compile failed ({type(err).__name__}: {err}); training "
                                  "eagerly from here on", stacklevel=2)
                    self.compile = False
            return self._fit(specs, parents)

    def _fit(self, specs: list[RunSpec], parents: list, compile_forward: bool = False) -> list[TrainedRun]:
        """:func:`reuse.study.training.fit.fit` on this runner's device, with theta_0, data and
        monitor splits prepared here."""
        model = self.build(specs[0])
        states = [self.initial_state(s, p) for s, p in zip(specs, parents)]
        data = [self.train_split(s) for s in specs]
        monitor = [self.monitor_split(s) for s in specs]
        return fit(model, specs, states, data, monitor, n_outputs=self.n_outputs(specs[0]),
                   device=self.device, precision=self.precision, threads=self.threads,
                   compile_forward=compile_forward)

    # --------------------------------------------------------------- cache
    def memo(self, parts: dict, compute, weights=()) -> list[float]:
        """Scores memoised in the run cache, tied to the digests of the ``weights`` they
        were computed from (:meth:`reuse.study.training.cache.RunCache.memo`)."""
        return self.cache.memo(parts, compute, weights)

    def _load(self, spec: RunSpec) -> TrainedRun | None:
        if spec.key not in self._runs:
            run = self.cache.load(spec, grouped_too=self.group_training)
            if run is not None:
                self._runs[spec.key] = run
        return self._runs.get(spec.key)

    def _check_entry(self, spec: RunSpec, blob) -> None:
        """Raise ValueError unless ``blob`` is a complete, finite run of ``spec``."""
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
        self.cache.store(run)


def check_settings(precision: str, threads: int, workers: int, device: torch.device = torch.device("cpu")
                   ) -> str:
    """``precision`` resolved on ``device`` ('auto' to 'bf16' or 'fp32'), and ``threads`` and
    ``workers`` checked; a ValueError names a bad value and what is allowed. A runner's
    settings, checked by `cnn-reuse run` too before any notebook starts."""
    if threads < 1 or workers < 1:
        raise ValueError(f"threads={threads}, workers={workers}; both must be >= 1")
    return resolve_precision(precision, device)


def _absolute(folder: str | Path | None) -> str | None:
    return None if folder is None else str(Path(folder).resolve())


def _inputs(spec: RunSpec) -> dict[str, str]:
    """What ``spec``'s weights are read from besides Fashion-MNIST, by SHA-256 (its cache key's
    ``data`` is the wheel set's arrays instead; ``pretrained``, the file it starts from)."""
    out = {"data": wheel_sets.sha256(spec.pair)} if spec.pair in wheel_sets.WHEEL_SETS else {}
    if spec.pretrained is not None:
        out["pretrained"] = pretrained.sha256(spec.pretrained)
    return out


def _data_fingerprint(provenance: dict) -> str:
    """SHA-256 of the data files' hashes (not of the folder they are in: moving the data
    retrains nothing)."""
    content = {k: v for k, v in provenance.items() if k != "fashion_mnist"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------- workers
_WORKERS: dict = {}  # per worker process: a runner per configuration


def _obtain_remote(config: dict, spec: RunSpec, parent: bytes | None) -> tuple[TrainedRun, bytes]:
    """Obtain one run in a worker process (a pool's or a Dask cluster's): load it from the
    shared cache, or train and store it under the entry's lock."""
    key = json.dumps(config, sort_keys=True, default=str)
    if key not in _WORKERS:
        torch.set_num_threads(config["threads"])
        runner = Runner("cpu", config["cache_dir"], config["data_dir"], precision=config["precision"],
                        threads=config["threads"], deterministic=config["deterministic"],
                        compile=config["compile"], progress=False, group_training=False)
        if runner.cache.data != config["data_sha256"]:  # the worker reads the files itself
            raise ValueError(f"the data in {runner.fashion.folder} changed since the run started (SHA-256 "
                             f"{runner.cache.data[:12]}, not {config['data_sha256'][:12]}); allowed: data "
                             "that stay the same for the whole run")
        _WORKERS[key] = runner
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
