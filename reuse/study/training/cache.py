"""The run cache: trained weights and scores on disk, keyed by everything that made them.

A run's entry is keyed by its :class:`~reuse.study.training.spec.RunSpec`, the SHA-256 of the data
files it trained on (of a wheel set's arrays), of the pretrained weights it started from, if
any, and a fingerprint of the training code (the source of the modules on the training
path), so other data, weights or training code retrains; no number is bumped by hand.
Entries live under a folder named for what fixes the rounding: precision, thread count and
the CPU class (vendor and MKL branch) or the GPU. A score entry records the
digests of the weights it was computed from and a checksum of itself; one that fails
either check is quarantined (renamed ``*.bad``) with a one-line warning and recomputed.

Trust model (docs/reliability.md): whoever can write the cache folder can forge entries
that pass these checks; the checks catch stale, corrupt and hand-edited entries, and
entries computed from other weights, data or code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import io
import json
import math
import os
import platform
import re
import time
import warnings
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path

import torch

from reuse.toolkit import files
from reuse.toolkit.files import FileLock
from reuse.toolkit.provenance import cpu_class

from .spec import RunSpec, TrainedRun

# the modules whose code decides a run's weights (their source is fingerprinted)
TRAINING_CODE = ("reuse.study.training.spec", "reuse.study.training.fit", "reuse.study.training.models",
                 "reuse.study.training.data", "reuse.study.training.wheel_sets",
                 "reuse.study.training.pretrained", "reuse.study.training.group", "reuse.study.training.train",
                 "reuse.toolkit.metrics", "reuse.toolkit.gpu", "reuse.toolkit.scoring")
# ... and a score (the swap-and-score path and the study's evaluator)
SCORING_CODE = ("reuse.toolkit.metrics", "reuse.toolkit.scoring", "reuse.toolkit.scan",
                "reuse.toolkit.surgery", "reuse.toolkit.gpu", "reuse.study.experiments.common")


@lru_cache(maxsize=4)
def code_fingerprint(modules: tuple[str, ...]) -> str:
    """SHA-256 over the source files of ``modules`` (read from disk, not imported)."""
    h = hashlib.sha256()
    for name in modules:
        origin = importlib.util.find_spec(name).origin
        h.update(name.encode() + b"\0" + Path(origin).read_bytes())
    return h.hexdigest()


def compute_class(device: torch.device, precision: str, threads: int) -> str:
    """The cache folder name: precision, threads and what picks the code path (the CPU
    vendor and the MKL, oneDNN and ATen code paths, or the GPU's name)."""
    if device.type == "cuda":
        where = "cuda-" + torch.cuda.get_device_name(device)
    elif device.type == "cpu":
        cpu = cpu_class()
        where = f"cpu-{cpu['vendor']}-mkl{cpu['mkl_cbwr']}-dnn{cpu['onednn_isa']}-aten{cpu['aten_isa']}"
    else:
        where = device.type
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", f"{precision}-t{threads}-{where}")


class RunCache:
    """Trained runs and memoised scores under ``folder`` (None: nothing on disk).

    ``data``: the data fingerprint (SHA-256 of the files read); ``compute``: the folder
    name from :func:`compute_class`. ``check(spec, blob)`` raises ValueError unless a
    loaded blob is a complete, finite run of ``spec`` (the runner knows the shapes).
    ``inputs(spec)``: the SHA-256 of what else a spec's weights are read from, by name,
    joining its key (``data`` replaces the fingerprint for a spec trained on other data;
    ``pretrained``, the weights it starts from).
    """

    def __init__(self, folder: str | Path | None, data: str, compute: str,
                 check: Callable[[RunSpec, dict], None],
                 inputs: Callable[[RunSpec], dict[str, str]] = lambda spec: {}):
        self.folder = Path(folder) if folder is not None else None
        self.data, self.compute, self.check, self.inputs = data, compute, check, inputs
        self.code = code_fingerprint(TRAINING_CODE)
        self._warned_not_stored = False
        self.unreadable: set[str] = set()

    def key(self, spec: RunSpec) -> str:
        """The entry's name: the spec, the data, any other inputs and the training code, hashed
        together."""
        blob = json.dumps({"spec": spec.key, "data": self.data, "code": self.code, **self.inputs(spec)},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def path(self, spec: RunSpec, grouped: bool = False) -> Path | None:
        if self.folder is None:
            return None
        key = self.key(spec)
        return self.folder / (self.compute + ("-grouped" if grouped else "")) / key[:2] / f"{key}.pt"

    # ----------------------------------------------------------------- runs
    def load(self, spec: RunSpec, grouped_too: bool = False) -> TrainedRun | None:
        """The stored run of ``spec``, or None; a bad entry is quarantined and None returned."""
        for grouped in (False, True) if grouped_too else (False,):
            path = self.path(spec, grouped)
            if path is None or not path.exists() or spec.key in self.unreadable:
                continue
            try:
                blob = torch.load(path, map_location="cpu", weights_only=True)
                if not isinstance(blob, dict) or blob.get("key") != self.key(spec):
                    raise ValueError("key missing or for another spec, data or code")
                self.check(spec, blob)
            except PermissionError as err:  # another user's entry: train, leave theirs alone
                self.unreadable.add(spec.key)
                warnings.warn(f"cannot read cache entry {path} ({err.strerror}); training this run "
                              "without replacing the entry", stacklevel=2)
                continue
            except Exception as err:  # any unreadable or wrong entry is retrained, never used
                self._quarantine(path, err, "retraining")
                continue
            return TrainedRun(spec, blob["state"], blob["history"], cached=True,
                              seconds=blob.get("seconds", 0.0), extra=blob.get("extra", {}))
        return None

    def store(self, run: TrainedRun) -> None:
        """Write ``run`` atomically (a temporary file, then a rename) and log it."""
        path = self.path(run.spec, run.extra.get("grouped", False))
        if path is None or run.spec.key in self.unreadable:
            return
        blob = {"key": self.key(run.spec), "spec": json.dumps(dataclasses.asdict(run.spec), default=str),
                "data": self.data, **self.inputs(run.spec), "code": self.code, "state": run.state,
                "history": run.history, "seconds": run.seconds, "extra": run.extra}
        buffer = io.BytesIO()
        torch.save(blob, buffer)  # in memory first: a full disk fails the write with ENOSPC, not in torch
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            files.write_atomic(path, buffer.getbuffer())  # with the umask; never half a file
        except OSError as err:
            self._not_stored(err, path)
            return
        self._log(run, path)

    @contextlib.contextmanager
    def locks(self, specs: Iterable[RunSpec]):
        """File locks on the specs' entries (in key order, so two processes never wait on
        each other crosswise); none without a cache or where the cache is read-only."""
        paths = sorted({str(p) for s in specs for p in [self.path(s)] if p is not None})
        with contextlib.ExitStack() as stack:
            for path in paths:
                try:
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                    stack.enter_context(FileLock(path + ".lock"))
                except files.SymlinkError as err:  # a link planted in a shared cache is never followed
                    warnings.warn(f"{err}; this entry is trained without its lock", stacklevel=3)
                except OSError as err:
                    self._not_stored(err, Path(path).parent)
                    break
            yield

    def _log(self, run: TrainedRun, path: Path) -> None:
        """One JSON line per stored training in ``<cache>/trained.log``: which process trained
        what, so a shared cache shows that each run was trained once."""
        line = json.dumps({"key": self.key(run.spec), "run": run.spec.describe(),
                           "file": str(path.relative_to(self.folder)), "seconds": round(run.seconds, 3),
                           "host": platform.node(), "pid": os.getpid(),
                           "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
        try:  # one short append: atomic on POSIX; a link is refused, never followed
            files.append_line(self.folder / "trained.log", line)
        except OSError as err:
            warnings.warn(f"{files.describe(err, 'trained.log')}; the run is stored, not logged", stacklevel=3)

    # ----------------------------------------------------------------- scores
    def memo(self, parts: dict, compute: Callable[[], list[float]], weights: Iterable[str] = ()
             ) -> list[float]:
        """``compute()`` (a list of floats), stored under ``scores/`` by the SHA-256 of
        ``parts``, the data and the scoring code, so notebooks that
        score the same swaps share the work. The entry records ``weights`` (the digests of
        the weights the scores come from, :meth:`TrainedRun.digest`) and a checksum of itself: an entry that fails either is quarantined and recomputed.
        Without a cache folder, or for an unreadable entry, it is computed."""
        weights = list(weights)
        if self.folder is None:
            return compute()
        ident = {"parts": parts, "data": self.data, "code": code_fingerprint(SCORING_CODE)}
        key = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()
        path = self.folder / "scores" / self.compute / key[:2] / f"{key}.json"
        if path.exists():
            try:
                entry = json.loads(path.read_text())
                if entry.get("weights") != weights:
                    raise ValueError("computed from other weights than the runs' now")
                if entry.get("check") != _checksum(entry["values"], weights, key):
                    raise ValueError("checksum does not match its values (edited or corrupt)")
                values = entry["values"]
                if isinstance(values, list) and all(isinstance(v, (int, float)) or v is None for v in values):
                    return [float("nan") if v is None else float(v) for v in values]
                raise ValueError("values are not a list of numbers")
            except PermissionError:
                return compute()
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
                self._quarantine(path, err, "recomputing")
        values = [float(v) for v in compute()]
        stored = [v if math.isfinite(v) else None for v in values]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            files.write_atomic(path, json.dumps({"parts": parts, "values": stored, "weights": weights,
                                                 "check": _checksum(stored, weights, key)}, default=str))
        except OSError as err:  # a full disk or a read-only cache: computed, not stored
            self._not_stored(err, path)
        return values

    # ----------------------------------------------------------------- helpers
    def _quarantine(self, path: Path, err: Exception, then: str) -> None:
        bad = path.with_suffix(".bad")
        try:
            os.replace(path, bad)
            moved = f"moved to {bad.name}"
        except OSError:
            moved = "left in place (the cache is read-only)"
        warnings.warn(f"bad cache entry {path} ({err}); {moved}, {then}", stacklevel=3)

    def _not_stored(self, err: OSError, where: Path) -> None:
        """Say once that what is computed now stays in memory (a read-only cache, a full disk)."""
        if self._warned_not_stored:
            return
        self._warned_not_stored = True
        why = (f": {files.describe(err, str(where))}" if files.out_of_space(err)
               else f" cannot be written ({where}: {err.strerror or err})")
        warnings.warn(f"the run cache {self.folder}{why}; what it holds is still used, but runs and "
                      "scores computed now are kept in memory only", stacklevel=3)


def _checksum(values: list, weights: list[str], key: str) -> str:
    return hashlib.sha256(json.dumps([values, weights, key]).encode()).hexdigest()

