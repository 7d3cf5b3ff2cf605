"""Where a result came from: code version, time, software and hardware.

Entry point: ``provenance(params)``, stored next to every table and figure by
``reuse.study.publishing.report.record``. Works offline and never raises: anything it cannot find
is reported as ``"unknown"``.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "torchvision", "torchmetrics", "numpy", "pandas")
UNKNOWN = "unknown"
_REPO_ROOT = Path(__file__).resolve().parents[2]  # reuse/toolkit/provenance.py -> the checkout


def provenance(params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Describe the current run.

    Returns a JSON-ready dict: ``commit`` (short sha or ``"unknown"``), ``dirty``
    (tracked files modified; ``None`` when the commit is unknown), ``timestamp_utc``
    (ISO 8601), ``python``, ``packages`` (name -> version), ``platform``,
    ``device`` (CUDA device name when CUDA is available, else the CPU model), ``cpu``
    (:func:`cpu_class`: model, vendor and the code paths in force, which fix the
    rounding of CPU results) and ``params`` (a copy of ``params``).
    """
    commit, dirty = _git_commit()
    return {
        "commit": commit,
        "dirty": dirty,
        "timestamp_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "platform": platform.platform(),
        "device": _device(),
        "cpu": cpu_class(),
        "params": dict(params or {}),
    }


def _git(*args: str) -> str:
    out = subprocess.run(["git", "-C", str(_REPO_ROOT), *args], capture_output=True,
                         text=True, timeout=10, check=True)
    return out.stdout.rstrip("\n")


def _git_commit() -> tuple[str, bool | None]:
    try:
        # Only trust the repository that holds this package's source, not one that
        # happens to enclose an installed copy (site-packages inside some checkout).
        if Path(_git("rev-parse", "--show-toplevel").strip()).resolve() != _REPO_ROOT:
            return UNKNOWN, None
        sha = _git("rev-parse", "--short", "HEAD").strip()
        changed = _git("status", "--porcelain", "--untracked-files=no").splitlines()
        dirty = any(not _output_only(line[3:].split(" -> ")[-1]) for line in changed)
    except (OSError, subprocess.SubprocessError, ValueError):
        return UNKNOWN, None
    return sha, dirty


OUTPUT_FOLDERS = ("results/", "figures/")  # what runs write; changing them changes no code


def _output_only(path: str) -> bool:
    """Whether a changed tracked file holds outputs only: a file under the output folders,
    or a notebook whose cells' sources are HEAD's (a run rewrites a notebook's outputs and
    injects its parameters; that is not a change of the code that made the results)."""
    if path.startswith(OUTPUT_FOLDERS):
        return True
    if not path.endswith(".ipynb"):
        return False
    head = json.loads(_git("show", f"HEAD:{path}"))
    now = json.loads((_REPO_ROOT / path).read_text(encoding="utf-8"))
    return notebook_sources(head) == notebook_sources(now)


def notebook_sources(notebook: dict) -> list[tuple[str, str]]:
    """(cell type, source) of every cell but papermill's injected parameters."""
    return [(cell["cell_type"], "".join(cell["source"])) for cell in notebook["cells"]
            if "injected-parameters" not in cell.get("metadata", {}).get("tags", [])]


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _device() -> str:
    try:
        import torch
        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return _cpu_model()


def cpu_class() -> dict[str, str]:
    """The CPU facts that decide the last bits of CPU results: ``model``, ``vendor``
    (``GenuineIntel``, ``AuthenticAMD``, ...; MKL picks its code path by it), ``mkl_cbwr``
    (the MKL branch in force), ``onednn_isa`` (the highest instruction set oneDNN may use)
    and ``aten_isa`` (the one ATen's kernels run on), all pinned by :mod:`reuse`; ``unset``
    where nothing caps them."""
    try:
        import torch
        aten = torch.backends.cpu.get_cpu_capability()
    except ImportError:
        aten = UNKNOWN
    return {"model": _cpu_model(), "vendor": _cpu_vendor(), "mkl_cbwr": os.environ.get("MKL_CBWR", "unset"),
            "onednn_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "unset"), "aten_isa": aten}


def _cpuinfo(field: str) -> str | None:
    """The first value of ``field`` in Linux's /proc/cpuinfo, or None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _cpu_vendor() -> str:
    return _cpuinfo("vendor_id") or platform.machine() or UNKNOWN


def _cpu_model() -> str:
    try:
        if sys.platform.startswith("linux") and _cpuinfo("model name"):
            return _cpuinfo("model name")
        if sys.platform == "darwin":
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"],
                                  capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine() or UNKNOWN
