"""benchmarks/gpu_paper.sh and gpu_wheelhouse.sh, the `paper` profile's run on the GPU machine
(issue 22): cheap checks only. The end-to-end check (a fresh venv, the wheelhouse installed
offline, every group at smoke) takes minutes and is a manual one, recorded in
benchmarks/README.md."""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "benchmarks" / "gpu_paper.sh"
WHEELHOUSE = REPO / "benchmarks" / "gpu_wheelhouse.sh"
IMAGE_LIST = REPO / "benchmarks" / "gpu_image_packages.txt"
# Needed to test or develop, never to run the notebooks (dask only behind --cluster).
DEV_ONLY = {"import-linter", "nbval", "jupyterlab", "pytest", "dask", "torch-cka"}
DEV_MODULES = {"importlinter", "nbval", "jupyterlab", "pytest", "dask", "distributed", "torch_cka"}


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", *args], check=False, capture_output=True, text=True, timeout=60,
                          env=env, cwd=REPO)


def _image() -> set[str]:
    return {canonicalize_name(line.strip()) for line in IMAGE_LIST.read_text().splitlines()
            if line.strip() and not line.startswith("#")}


def _requirements() -> list[Requirement]:
    lines = (line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def test_groups_cover_every_notebook_exactly_once():
    result = _run(str(PAPER), "--list-groups")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    listed = [nb for line in result.stdout.splitlines() for nb in line.split("\t")[1].split()]
    assert sorted(listed) == sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb"))
    assert len(listed) == len(set(listed))
    assert listed == sorted(listed), "groups run in the notebooks' order (later ones reuse the cache)"


@pytest.mark.parametrize("script", [PAPER, WHEELHOUSE], ids=lambda p: p.name)
def test_shell_syntax(script):
    result = _run("-n", str(script))
    assert result.returncode == 0, result.stderr
    if shutil.which("shellcheck"):
        check = subprocess.run(["shellcheck", str(script)], check=False, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout


def test_wheelhouse_names_every_runtime_need_the_image_lacks():
    needs, nodeps = _run(str(WHEELHOUSE), "--print-needs"), _run(str(WHEELHOUSE), "--print-nodeps")
    assert needs.returncode == 0 and nodeps.returncode == 0, needs.stderr + nodeps.stderr
    pinned = {canonicalize_name(Requirement(line).name): Requirement(line)
              for line in (needs.stdout + nodeps.stdout).split()}
    assert "facenet-pytorch" in pinned  # notebook 07's weights, though requirements.txt cannot name it
    image = _image()
    assert {"torch", "torchvision", "seaborn", "pandas"} <= image and "papermill" not in image
    runtime = [r for r in _requirements() if canonicalize_name(r.name) not in DEV_ONLY]
    lacking = {canonicalize_name(r.name): r for r in runtime if canonicalize_name(r.name) not in image}
    assert lacking, "requirements.txt names no package the image lacks: is the list right?"
    for name, requirement in lacking.items():
        assert name in pinned, f"{name} (requirements.txt) is neither in the image nor in the wheelhouse"
        version = next(iter(pinned[name].specifier)).version
        assert requirement.specifier.contains(version), f"{pinned[name]} does not meet {requirement}"
    assert not set(pinned) & image, "the wheelhouse names a package the image already holds"


def _module_level_imports(tree: ast.Module) -> set[str]:
    """Top-level package names imported at module level (under if/try too, not in functions)."""
    found, todo = set(), list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, (ast.If, ast.Try)):
            todo += node.body + node.orelse + getattr(node, "finalbody", [])
            todo += [n for h in getattr(node, "handlers", []) for n in h.body]
    return found


def test_nothing_run_time_imports_a_dev_only_package():
    """What the wheelhouse leaves out (dask, jupyterlab, torch-cka, ...) is imported by no
    module of the package at import time and by no notebook."""
    for path in (REPO / "reuse").rglob("*.py"):
        bad = _module_level_imports(ast.parse(path.read_text(), str(path))) & DEV_MODULES
        assert not bad, f"{path.relative_to(REPO)} imports {bad} at module level"
    for path in (REPO / "notebooks").glob("*.ipynb"):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                source = "".join(cell["source"])
                imported = re.findall(r"^\s*(?:import|from)\s+(\w+)", source, re.MULTILINE)
                bad = DEV_MODULES & set(imported)
                assert not bad, f"{path.name} imports {bad}"


def test_bad_arguments_exit_2_naming_what_is_allowed():
    unknown = _run(str(PAPER), "07")
    assert unknown.returncode == 2 and "unknown group '07'" in unknown.stderr
    assert "01 02-03 04 05-07" in unknown.stderr
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    no_out = _run(str(PAPER), "01", env=env)
    assert no_out.returncode == 2 and "OUT is not set" in no_out.stderr
    budget = _run(str(PAPER), "--budget", "10", "01")
    assert budget.returncode == 2 and "--budget" in budget.stderr
    version = _run(str(WHEELHOUSE), "--python-version", "12")
    assert version.returncode == 2 and "3.N" in version.stderr
