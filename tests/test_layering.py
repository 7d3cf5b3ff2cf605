"""The layering contract (pyproject.toml, import-linter): the toolkit imports no project model.

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


def test_toolkit_contract_is_kept():
    done = _lint()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 kept, 0 broken" in done.stdout


def test_a_broken_contract_fails(tmp_path):
    config = tmp_path / "broken.toml"
    config.write_text('[tool.importlinter]\nroot_package = "reuse"\n\n[[tool.importlinter.contracts]]\n'
                      'name = "experiments may not use the selection rule (false: they do)"\n'
                      'type = "forbidden"\nsource_modules = ["reuse.experiments.small_data"]\n'
                      'forbidden_modules = ["reuse.selection"]\n')
    done = _lint(str(config))
    assert done.returncode != 0 and "BROKEN" in done.stdout
    assert "reuse.experiments.small_data -> reuse.selection" in done.stdout
