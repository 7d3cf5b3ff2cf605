"""Faults of whole runs at smoke scale (real notebooks, real Fashion-MNIST): a run killed
mid-way resumes from the cache, concurrent runs on one cache train every model once, and
a 2-worker Dask cluster gives the serial run's results."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import SMALL_RUN, reuse_run, trained_log


def _results(output: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((output / "results").glob("*.csv"))}


def _each_trained_once(cache: Path) -> list[dict]:
    log = trained_log(cache)
    assert log, "nothing was trained"
    twice = [k for k, n in Counter(line["key"] for line in log).items() if n > 1]
    assert not twice, f"trained more than once: {twice}"
    return log


def test_kill_9_mid_run_then_resume_loses_no_finished_run(tmp_path):
    cache = tmp_path / "cache"
    child = reuse_run(*SMALL_RUN, cache=cache, output=tmp_path / "a", popen=True)
    deadline = time.monotonic() + 300
    while len(trained_log(cache)) < 2 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert child.poll() is None, "the run ended before it could be killed:\n" + child.stdout.read()
    os.killpg(child.pid, signal.SIGKILL)  # the runner and its notebook kernel
    child.wait()
    before = {line["key"] for line in trained_log(cache)}
    assert before

    resumed = reuse_run(*SMALL_RUN, cache=cache, output=tmp_path / "a")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    log = _each_trained_once(cache)  # nothing finished before the kill was trained again
    assert before < {line["key"] for line in log}
    assert (tmp_path / "a" / "notebooks" / "01_network_reusability.ipynb").exists()


def test_two_concurrent_runs_on_one_cache_train_each_model_once(tmp_path):
    cache = tmp_path / "cache"
    children = [reuse_run(*SMALL_RUN, cache=cache, output=tmp_path / name, popen=True) for name in "ab"]
    for child in children:
        out, _ = child.communicate(timeout=600)
        assert child.returncode == 0, out
    log = _each_trained_once(cache)
    assert len(log) == len(list(cache.rglob("*.pt")))  # every entry in the cache, trained once
    assert _results(tmp_path / "a") == _results(tmp_path / "b")


def test_a_two_worker_dask_cluster_gives_the_serial_results_training_each_run_once(tmp_path):
    pytest.importorskip("distributed")
    serial = reuse_run(*SMALL_RUN, cache=tmp_path / "serial", output=tmp_path / "serial")
    assert serial.returncode == 0, serial.stdout + serial.stderr
    dask = reuse_run(*SMALL_RUN, "--cluster", "local:2", cache=tmp_path / "dask", output=tmp_path / "dask")
    assert dask.returncode == 0, dask.stdout + dask.stderr
    log = _each_trained_once(tmp_path / "dask")
    assert len({line["pid"] for line in log}) >= 2  # the workers trained
    assert {line["key"] for line in log} == {line["key"] for line in trained_log(tmp_path / "serial")}
    serial_csv, dask_csv = _results(tmp_path / "serial"), _results(tmp_path / "dask")
    assert serial_csv and serial_csv == dask_csv, [n for n in serial_csv if serial_csv[n] != dask_csv.get(n)]


def test_without_a_cluster_nothing_imports_dask():
    code = ("import sys, reuse.study.publishing.batch, reuse.study.experiments.common\n"
            "import reuse.study.training.train\n"
            "from reuse.study.experiments.common import session\n"
            "session('smoke', device='cpu')\n"
            "sys.exit(any(m == 'dask' or m.startswith(('dask.', 'distributed')) for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
