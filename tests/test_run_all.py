"""run_all.sh (set-up, then python -m reuse run) against a folder of tiny fake notebooks
(REUSE_NOTEBOOKS_DIR): every option checked before anything runs, bad ones exit 2."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
RUN_ALL = REPO / "run_all.sh"
OPTIONS = ["--profile", "--only", "--seeds", "--device", "--output", "--set", "--data-dir",
           "--download", "--cluster", "--setup-only", "--dry-run", "--help"]
PARAMETERS = """\
profile = "quick"
seeds = None
device = "auto"
figures_dir = "."
results_dir = "."
cache_dir = "."
data_dir = None
reuse_threshold = 0.8"""
RECORD = """\
import pandas as pd
from reuse.study.publishing.report import record

record("01_fake", pd.DataFrame({"metric": ["threshold"], "value": [reuse_threshold]}),
       params=dict(profile=profile, seeds=seeds, device=device), results_dir=results_dir)"""


def _notebook(path: Path, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    parameters = nbformat.v4.new_code_cell(PARAMETERS)
    parameters.metadata["tags"] = ["parameters"]
    nb.cells = [parameters, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def notebooks(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("notebooks")
    _notebook(folder / "01_fake.ipynb", RECORD)
    _notebook(folder / "02_other.ipynb", RECORD.replace("01_fake", "02_other"))
    _notebook(folder / "03_boom.ipynb", 'raise ValueError("boom-4711")')
    return folder


def run_all(*args: str, notebooks: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """run_all.sh in the environment running these tests, so it skips the setup."""
    env = dict(os.environ,
               VIRTUAL_ENV=sys.prefix,
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               REUSE_NOTEBOOKS_DIR=str(notebooks),
               REUSE_CACHE_DIR=str(tmp_path / "cache"))
    return subprocess.run([str(RUN_ALL), *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)


def test_help_lists_every_option_with_defaults(notebooks, tmp_path):
    result = run_all("--help", notebooks=notebooks, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    for option in OPTIONS:
        assert option in result.stdout
    assert "[quick]" in result.stdout and "[auto]" in result.stdout


@pytest.mark.parametrize("args, bad", [
    (["--bogus"], "--bogus"),
    (["--dry-run=yes"], "--dry-run"),
    (["--profile=huge"], "huge"),
    (["--profile", "huge"], "huge"),
    (["--profile"], "--profile"),
    (["--device", "tpu"], "tpu"),
    (["--seeds", "0,x"], "0,x"),
    (["--seeds", "1,,2"], "1,,2"),
    (["--seeds", "01"], "01"),
    (["--seeds", ""], "--seeds ''"),
    (["--only", "zzz"], "zzz"),
    (["--set", "no_such_param=1"], "no_such_param"),
    (["--set", "reuse_threshold"], "reuse_threshold"),
    (["--set", "reuse_threshold=abc"], "expects float, got str"),
    (["--set", "reuse_threshold=[0.1"], "is not valid YAML"),
    (["--set", "profile=paper"], "profile"),
    (["--cluster", "somewhere"], "somewhere"),
    (["--output", "/proc/x"], "cannot write to /proc/x"),
])
def test_bad_arguments_exit_2_naming_the_value(args, bad, notebooks, tmp_path):
    # --dry-run: even if validation let it through, nothing would run.
    result = run_all(*args, "--dry-run", notebooks=notebooks, tmp_path=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert bad in result.stderr
    assert not (tmp_path / "out").exists()


def test_an_explicit_data_dir_without_the_data_exits_2_and_writes_nothing(notebooks, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_all("--only", "01", "--data-dir", str(empty), "--output", str(tmp_path / "out"),
                     notebooks=notebooks, tmp_path=tmp_path)
    assert result.returncode == 2 and f"not found in {empty}" in result.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_set_names_the_notebook_and_allowed_names(notebooks, tmp_path):
    result = run_all("--set", "typo=1", "--dry-run", notebooks=notebooks, tmp_path=tmp_path)
    assert result.returncode == 2
    assert "01_fake.ipynb" in result.stderr and "reuse_threshold" in result.stderr


def test_dry_run_prints_one_line_per_notebook_with_every_value(notebooks, tmp_path):
    out = tmp_path / "X"
    result = run_all("--dry-run", "--profile", "smoke", "--only", "01", "--seeds", "0,1",
                     "--device", "cpu", "--output", "X", "--set", "reuse_threshold=0.5",
                     notebooks=notebooks, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("01_fake.ipynb:")]
    for value in ["'profile': 'smoke'", "'device': 'cpu'", "'seeds': [0, 1]",
                  f"'figures_dir': '{out}/figures'", f"'results_dir': '{out}/results'",
                  f"'cache_dir': '{tmp_path}/cache'", "'reuse_threshold': 0.5", f"{out}/notebooks/01_fake"]:
        assert value in line
    assert "02_other" not in result.stdout
    assert not out.exists()  # nothing ran


def test_only_accepts_globs_and_repeats(notebooks, tmp_path):
    result = run_all("--dry-run", "--only", "0[12]_*", "--only", "boom",
                     notebooks=notebooks, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len([line for line in result.stdout.splitlines() if ".ipynb:" in line]) == 3


def test_run_executes_records_and_summarises(notebooks, tmp_path):
    out = tmp_path / "out"
    result = run_all("--only", "01", "--profile", "smoke", "--device", "cpu", "--output",
                     str(out), "--set", "reuse_threshold=0.625",
                     notebooks=notebooks, tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[1/1] 01_fake.ipynb ... ok" in result.stdout
    executed = nbformat.read(out / "notebooks" / "01_fake.ipynb", as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert "reuse_threshold = 0.625" in injected[0].source
    recorded = json.loads((out / "results" / "01_fake.json").read_text())
    assert recorded["headline"] == [{"metric": "threshold", "value": 0.625}]
    assert recorded["params"]["profile"] == "smoke"
    summary = (out / "results" / "SUMMARY.md").read_text()
    assert "| threshold | 0.625 |" in summary
    assert str(out / "results" / "SUMMARY.md") in result.stdout
    assert nbformat.read(notebooks / "01_fake.ipynb", as_version=4).cells[1].outputs == []


def test_failing_notebook_exits_1_with_error_and_partial_path(notebooks, tmp_path):
    out = tmp_path / "out"
    result = run_all("--only", "03", "--device", "cpu", "--output", str(out),
                     notebooks=notebooks, tmp_path=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "ValueError: boom-4711" in result.stderr
    (partial,) = (out / "notebooks").glob(".03_boom.*.partial.ipynb")  # a name of its own per run
    assert str(partial) in result.stderr
    assert not (out / "notebooks" / "03_boom.ipynb").exists()
    assert not (out / "results" / "SUMMARY.md").exists()


def test_default_outputs_are_per_profile_and_inject_no_machine_paths(notebooks, tmp_path):
    result = run_all("--dry-run", "--profile", "smoke", "--only", "01", notebooks=notebooks,
                     tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("01_fake")]
    assert "figures_dir" not in line and "results_dir" not in line  # the notebooks' defaults
    # only the committed profile's executed notebooks replace notebooks/
    assert line.endswith("results/smoke/notebooks/01_fake.ipynb")
    quick = run_all("--dry-run", "--only", "01", notebooks=notebooks, tmp_path=tmp_path).stdout
    assert f"-> {notebooks}/01_fake.ipynb" in quick
