"""The layering contracts (pyproject.toml, import-linter): the toolkit never imports the study,
and neither package has an import circle.

Runs ``lint-imports`` as CI does, and checks that a contract the code breaks does fail, so
a passing run means the contract was checked.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lint-imports")
    exe = str(exe) if exe.exists() else shutil.which("lint-imports")
    if exe is None:
        pytest.fail("lint-imports not found: pip install 'import-linter>=2.0' (requirements.txt)")
    return subprocess.run([exe, "--no-cache", "--no-logo", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_toolkit_contracts_are_kept():
    done = _lint()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 kept, 0 broken" in done.stdout


def test_a_broken_contract_fails(tmp_path):
    config = tmp_path / "broken.toml"
    config.write_text('[tool.importlinter]\nroot_package = "reuse"\n\n[[tool.importlinter.contracts]]\n'
                      'name = "experiments may not use the selection rule (false: they do)"\n'
                      'type = "forbidden"\nsource_modules = ["reuse.study.experiments.small_data"]\n'
                      'forbidden_modules = ["reuse.toolkit.selection"]\n')
    done = _lint(str(config))
    assert done.returncode != 0 and "BROKEN" in done.stdout
    assert "reuse.study.experiments.small_data -> reuse.toolkit.selection" in done.stdout


def test_the_wall_is_package_level(tmp_path):
    """The reversed rule (study below toolkit) must break: the study imports the toolkit, so a
    package-level rule sees every module, including ones added later."""
    config = tmp_path / "reversed.toml"
    config.write_text('[tool.importlinter]\nroot_package = "reuse"\n\n[[tool.importlinter.contracts]]\n'
                      'name = "reversed"\ntype = "layers"\nlayers = ["reuse.toolkit", "reuse.study"]\n')
    done = _lint(str(config))
    assert done.returncode != 0 and "BROKEN" in done.stdout
