"""The repository as an artifact (issue 21): licence, citation, the lock file against
requirements.txt, the JupyterLab settings against the installed JupyterLab (and JupyterLab
itself, opened in headless Chromium), the Binder files."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import jsonschema
import pytest
import yaml
from _chromium import dump_dom
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
AUTHORS = [("Liang", "Dong"), ("Cheng", "Lin"), ("Wang", "Wei"), ("Zhu", "Y.")]  # the paper's order
OVERRIDES = REPO / "jupyter" / "overrides.json"
LAB_SCHEMAS = Path(sys.prefix) / "share" / "jupyter" / "lab" / "schemas"


def test_citation_names_the_paper_and_its_authors_in_order():
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT"
    paper = cff["preferred-citation"]
    assert paper["type"] == "article" and paper["year"] == 2020
    assert paper["title"] == "Exploring the parameter reusability of CNN"
    assert [(a["family-names"], a["given-names"]) for a in paper["authors"]] == AUTHORS
    assert paper["url"] == "https://arxiv.org/abs/2008.03411"
    assert {"type": "other", "value": "arXiv:2008.03411"}.items() <= paper["identifiers"][0].items()


def test_licence_is_mit():
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License") and "Copyright (c) 2026 the reuse authors" in text


@pytest.mark.parametrize("path", ["README.md", "docs/protocol.md", *sorted(
    str(p.relative_to(REPO)) for p in (REPO / "notebooks").glob("*.ipynb"))])
def test_the_paper_is_cited_in_its_author_order(path):
    text = (REPO / path).read_text(encoding="utf-8")
    assert "Wang et al." not in text and "Wang, Cheng, Zhu, Liang" not in text
    assert re.search(r"Liang et al\.|Liang, Cheng, Wang, Zhu", text), f"{path} does not cite the paper"


def _pins(lock: str) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) of a pip-compile --generate-hashes file."""
    pins, name = {}, None
    for line in lock.splitlines():
        if match := re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)", line):
            name = canonicalize_name(match[1])
            pins[name] = (match[2], 0)
        elif name and "--hash=sha256:" in line:
            pins[name] = (pins[name][0], pins[name][1] + 1)
    return pins


def test_lock_pins_every_requirement_within_its_floor_with_hashes():
    pins = _pins((REPO / "requirements.lock").read_text(encoding="utf-8"))
    assert len(pins) > 100
    for line in (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in pins, f"requirements.txt names {req.name}, requirements.lock does not: refresh the lock (README)"
        assert req.specifier.contains(pins[name][0]), f"requirements.lock pins {name}=={pins[name][0]}, outside {req}"
    unhashed = [name for name, (_, hashes) in pins.items() if hashes == 0]
    assert not unhashed, f"pins without --hash: {unhashed}"


def test_no_deps_lock_is_hashed_installed_without_dependencies_and_holds_the_weights():
    """requirements-nodeps.lock (facenet-pytorch, whose wheel ships notebook 07's pretrained
    ONet and which pins torch < 2.3) is hashed, kept out of the main lock, and every set-up
    path installs it with --no-deps --require-hashes; the installed copy has the weights."""
    pins = _pins((REPO / "requirements-nodeps.lock").read_text(encoding="utf-8"))
    assert pins == {"facenet-pytorch": ("2.6.0", 1)}
    assert "facenet-pytorch" not in _pins((REPO / "requirements.lock").read_text(encoding="utf-8"))
    run_all = (REPO / "run_all.sh").read_text(encoding="utf-8")
    assert "NODEPS=(--no-deps --only-binary :all: --require-hashes -r requirements-nodeps.lock)" in run_all
    assert run_all.count('"${NODEPS[@]}"') == 2  # the lock path and the requirements.txt path
    assert "--no-deps --only-binary :all: --require-hashes -r requirements-nodeps.lock" in \
        (REPO / "postBuild").read_text(encoding="utf-8")
    from importlib.metadata import distribution
    assert distribution("facenet-pytorch").version == "2.6.0"
    assert Path(distribution("facenet-pytorch").locate_file("facenet_pytorch/data/onet.pt")).is_file()


def test_lab_overrides_name_settings_of_the_installed_jupyterlab():
    overrides = json.loads(OVERRIDES.read_text(encoding="utf-8"))
    assert overrides, "jupyter/overrides.json is empty"
    for plugin, values in overrides.items():
        package, _, name = plugin.partition(":")
        schema_file = LAB_SCHEMAS / package / f"{name}.json"
        assert schema_file.is_file(), f"{plugin}: no schema {schema_file} in the installed JupyterLab"
        schema = json.loads(schema_file.read_text(encoding="utf-8"))
        assert set(values) <= set(schema["properties"]), f"{plugin}: unknown keys {set(values) - set(schema['properties'])}"
        jsonschema.validate(values, schema)  # additionalProperties is false: wrong types fail too
    assert overrides["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_jupyterlab_opens_a_notebook_without_the_news_pop_up(tmp_path):
    """JupyterLab with only jupyter/overrides.json as its settings shows notebook 01 with its
    committed outputs and no "Would you like to get notified about official Jupyter news?"."""
    settings = tmp_path / "app_settings"
    settings.mkdir()
    (settings / "overrides.json").write_bytes(OVERRIDES.read_bytes())
    port = _free_port()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "config"), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "user_settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"), JUPYTER_PREFER_ENV_PATH="1")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--port-retries=0", "--allow-root",
         f"--ServerApp.root_dir={REPO}", "--IdentityProvider.token=", f"--LabApp.app_settings_dir={settings}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/lab", timeout=2)
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(f"jupyter lab exited {server.returncode}: {server.stderr.read()[-2000:]}")
                time.sleep(0.5)
        else:
            pytest.fail("jupyter lab did not answer within 60 s")
        dom = dump_dom(f"http://127.0.0.1:{port}/lab/tree/notebooks/01_network_reusability.ipynb", budget_ms=30000)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert "What we found" in dom, "notebook 01 did not render"
    assert '<img src="data:image/png' in dom, "no committed figure rendered"
    assert "notified about official Jupyter news" not in dom


def test_binder_files():
    assert (REPO / "apt.txt").read_text(encoding="utf-8").split() == ["dataset-fashion-mnist"]
    post_build = REPO / "postBuild"
    assert os.access(post_build, os.X_OK), "postBuild must be executable (repo2docker runs it as ./postBuild)"
    assert subprocess.run(["bash", "-n", str(post_build)]).returncode == 0
    assert "jupyter/overrides.json" in post_build.read_text(encoding="utf-8")
    assert not (REPO / "binder").exists() and not (REPO / ".binder").exists(), \
        "a binder/ folder makes repo2docker ignore environment.yml, apt.txt and postBuild at the root"


def test_run_all_names_a_bad_reuse_no_lock_before_making_a_venv(tmp_path):
    """REUSE_NO_LOCK chooses between requirements.lock and requirements.txt when run_all.sh
    makes .venv; any value but 0 or 1 stops it there, named, with nothing created."""
    script = tmp_path / "run_all.sh"
    script.write_bytes((REPO / "run_all.sh").read_bytes())
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
    done = subprocess.run(["bash", str(script), "--setup-only"], env={**env, "REUSE_NO_LOCK": "yes"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "REUSE_NO_LOCK=yes: use 1" in done.stderr
    assert not (tmp_path / ".venv").exists()
