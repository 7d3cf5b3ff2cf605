"""reuse.toolkit.provenance: every key present, offline, never failing."""
from __future__ import annotations

import json
import platform
import shutil
import subprocess
from datetime import datetime

import pytest

import reuse.toolkit.provenance as prov_module
from reuse.toolkit.provenance import PACKAGES, provenance


def test_keys_values_and_params():
    params = {"profile": "smoke", "seeds": [0, 1]}
    prov = provenance(params)
    assert set(prov) == {"commit", "dirty", "timestamp_utc", "python", "packages", "platform",
                         "device", "cpu", "params"}
    assert isinstance(prov["commit"], str) and prov["commit"]
    assert datetime.fromisoformat(prov["timestamp_utc"]).utcoffset().total_seconds() == 0
    assert prov["python"] == platform.python_version()
    assert set(prov["packages"]) == set(PACKAGES)
    assert prov["packages"]["torch"] != "not installed"
    assert prov["device"]
    # the CPU class that fixes the last bits of CPU results, with the code paths reuse pins
    assert set(prov["cpu"]) == {"model", "vendor", "mkl_cbwr", "onednn_isa", "aten_isa"}
    assert (prov["cpu"]["mkl_cbwr"], prov["cpu"]["onednn_isa"]) == ("COMPATIBLE", "AVX2")
    assert prov["cpu"]["aten_isa"] != "AVX512"  # capped where the CPU has it
    assert prov["params"] == params and prov["params"] is not params
    json.dumps(prov)  # JSON-ready


def test_commit_is_unknown_outside_a_git_checkout(monkeypatch, tmp_path):
    monkeypatch.setattr(prov_module, "_REPO_ROOT", tmp_path)
    prov = provenance()
    assert (prov["commit"], prov["dirty"]) == ("unknown", None)


def test_commit_is_unknown_without_git(monkeypatch):
    monkeypatch.setenv("PATH", "")
    assert provenance()["commit"] == "unknown"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_commit_and_dirty_flag_in_a_checkout(monkeypatch, tmp_path):
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tmp_path), *args], check=True,
                              capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    (tmp_path / "f.txt").write_text("a")
    git("add", "f.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    monkeypatch.setattr(prov_module, "_REPO_ROOT", tmp_path.resolve())
    prov = provenance()
    assert (prov["commit"], prov["dirty"]) == (git("rev-parse", "--short", "HEAD"), False)
    (tmp_path / "f.txt").write_text("b")
    assert provenance()["dirty"] is True


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_outputs_a_run_writes_do_not_make_it_dirty(monkeypatch, tmp_path):
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tmp_path), *args], check=True,
                              capture_output=True, text=True).stdout.strip()

    def notebook(source: str, output: str = "") -> str:
        cells = [{"cell_type": "code", "source": [source], "metadata": {}, "outputs": [output]}]
        return json.dumps({"cells": cells, "metadata": {}})

    git("init", "-q")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "r.json").write_text("{}")
    (tmp_path / "nb.ipynb").write_text(notebook("x = 1"))
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    monkeypatch.setattr(prov_module, "_REPO_ROOT", tmp_path.resolve())
    (tmp_path / "results" / "r.json").write_text('{"a": 1}')
    executed = json.loads(notebook("x = 1", "1"))
    executed["cells"].insert(0, {"cell_type": "code", "source": ["x = 2"], "outputs": [],
                                 "metadata": {"tags": ["injected-parameters"]}})
    (tmp_path / "nb.ipynb").write_text(json.dumps(executed))
    assert provenance()["dirty"] is False  # outputs and injected parameters only
    (tmp_path / "nb.ipynb").write_text(notebook("x = 3"))
    assert provenance()["dirty"] is True  # a changed cell is changed code


def test_the_commit_is_this_checkouts():
    """A checkout's provenance names its own commit (the package's depth is counted right)."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert provenance()["commit"] == head
