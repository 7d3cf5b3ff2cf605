"""The distribution's core is what the toolkit needs: `cnn-reuse analyze` runs with the study's and
the tests' extras missing, every third-party import of the toolkit is a core dependency, and
requirements.txt (what run_all.sh, the lock and environment.yml install) is core + extras."""
from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import torch
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from reuse.__main__ import COMMANDS

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _names(lines) -> set[str]:
    return {canonicalize_name(Requirement(line).name) for line in lines}


def _core_files() -> list[Path]:
    """The toolkit and what `cnn-reuse analyze` imports on its way to it."""
    analyze = Path(importlib.util.find_spec(COMMANDS["analyze"]).origin)
    return [*sorted((REPO / "reuse" / "toolkit").rglob("*.py")), REPO / "reuse" / "__init__.py",
            REPO / "reuse" / "__main__.py", REPO / "reuse" / "study" / "__init__.py", analyze]


def _third_party(path: Path) -> set[str]:
    tops = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            tops |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            tops.add(node.module.split(".")[0])
    return {t for t in tops if t not in sys.stdlib_module_names and t not in ("reuse", "__future__")}


def test_requirements_txt_is_the_core_and_both_extras():
    listed = [line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    listed = {str(Requirement(line)) for line in listed if line}
    declared = [*PROJECT["dependencies"], *(r for extra in PROJECT["optional-dependencies"].values() for r in extra)]
    assert listed == {str(Requirement(r)) for r in declared}
    assert set(PROJECT["optional-dependencies"]) == {"study", "test"}


def test_every_third_party_import_of_the_toolkit_is_a_core_dependency():
    core = _names(PROJECT["dependencies"])
    owners = packages_distributions()
    missing = {}
    for path in _core_files():
        for top in _third_party(path):
            dists = {canonicalize_name(d) for d in owners.get(top, [top])}
            if not dists & core:
                missing.setdefault(top, []).append(path.name)
    assert not missing, f"imported by the toolkit but not a core dependency: {missing}"


def test_analyze_runs_with_the_extras_missing(tmp_path):
    """The study's and tests' packages made unimportable (as in a core-only install), then
    `python -m reuse analyze` on a pair, kernels only and scored through --score."""
    core = _names(PROJECT["dependencies"])
    extras = _names(r for extra in PROJECT["optional-dependencies"].values() for r in extra) - core
    blocked = sorted(top for top, dists in packages_distributions().items()
                     if {canonicalize_name(d) for d in dists} & extras and top.isidentifier())
    assert {"seaborn", "papermill", "pytest", "dask", "yaml"} <= set(blocked)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3))
    torch.save(net.state_dict(), tmp_path / "target.pt")
    with torch.no_grad():
        net[2].weight.add_(0.1)
    torch.save(net.state_dict(), tmp_path / "source.pt")
    (tmp_path / "mine.py").write_text(
        "import torch\n"
        "def model():\n    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3))\n"
        "def score(m):\n    return 1.0\n")
    guard = (f"import sys, runpy\nBLOCKED = set({blocked!r})\n"
             "class Block:\n"
             "    def find_spec(self, name, path=None, target=None):\n"
             "        if name.split('.')[0] in BLOCKED:\n"
             "            raise ModuleNotFoundError(f'{name} (an extra, blocked)', name=name)\n"
             "sys.meta_path.insert(0, Block())\n"
             "sys.argv = ['reuse', *sys.argv[1:]]\n"
             "runpy.run_module('reuse', run_name='__main__')\n")
    (tmp_path / "guard.py").write_text(guard)
    for out, extra in (("kernels", []), ("scored", ["--model", "mine:model", "--score", "mine:score",
                                                    "--path", str(tmp_path), "--no-progress"])):
        run = subprocess.run([sys.executable, str(tmp_path / "guard.py"), "analyze", str(tmp_path / "source.pt"),
                              str(tmp_path / "target.pt"), *extra, "--out", str(tmp_path / out)],
                             capture_output=True, text=True, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        assert (tmp_path / out / "report.html").is_file()
    assert (tmp_path / "scored" / "freeze.json").is_file()
