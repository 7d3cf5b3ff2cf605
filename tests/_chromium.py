"""Headless Chromium for the tests that open pages (test_site.py, test_artifact.py).

Debian's ``chromium`` (``apt-get install chromium``; ``.ci/run`` installs it). A test that needs
it fails, never skips, when it is missing: CI must not pass without having looked.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile

import pytest

# root in a container: no sandbox; no GPU; nothing that phones home
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1200,900"]


def chromium() -> str:
    """The Chromium executable, or the test fails saying how to install it."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium not found on PATH: apt-get install chromium (.ci/run installs it)")
    return exe


def dump_dom(url: str, budget_ms: int = 5000, timeout: float = 120) -> str:
    """The DOM of ``url`` after its load event and ``budget_ms`` of virtual time."""
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [chromium(), *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
             "--dump-dom", url],
            capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0 or "<html" not in done.stdout:
        pytest.fail(f"chromium --dump-dom {url} exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout
