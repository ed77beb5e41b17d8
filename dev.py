#!/usr/bin/env python3
"""Set up and run lead-sla with nothing but Python 3.11+.

    python3 dev.py run     # virtualenv + install, then serve on SQLite with the example policies
    python3 dev.py test    # virtualenv + install, then the whole suite (SQLite, and PostgreSQL
                           # too when LEAD_SLA_TEST_DATABASE_URL is set)

Extra arguments go to `lead-sla serve` or to pytest.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".installed"


def ensure_environment() -> None:
    """Create .venv and install the project with its dev extras, again only when
    pyproject.toml changed."""
    if sys.version_info < (3, 11):
        sys.exit(f"lead-sla needs Python 3.11 or newer (this is {sys.version.split()[0]})")
    if not (BIN / "python").exists():
        print("creating virtual environment in .venv", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return
    print("installing lead-sla and its dependencies", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "install", "-e", f"{ROOT}[dev]"], check=True)
    STAMP.write_text(digest)


def ensure_dotenv() -> None:
    """A local .env with a generated webhook secret, so `lead-sla simulate` can sign traffic
    the local server accepts."""
    dotenv = ROOT / ".env"
    if dotenv.exists():
        return
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    dotenv.write_text(
        "# Local settings for `python3 dev.py run`; see README for every LEAD_SLA_* variable.\n"
        f"LEAD_SLA_WEBHOOK_SECRET_GENERIC={secret}\n"
    )
    print("wrote .env with a generated LEAD_SLA_WEBHOOK_SECRET_GENERIC", flush=True)


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("run", "test"):
        print(__doc__)
        return 2
    command, extra = sys.argv[1], sys.argv[2:]
    ensure_environment()
    os.chdir(ROOT)
    if command == "run":
        ensure_dotenv()
        return subprocess.call([str(BIN / "lead-sla"), "serve", *extra])
    return run_tests(extra)


def run_tests(extra: list[str]) -> int:
    """Lint and types, then the suite on SQLite, then — if LEAD_SLA_TEST_DATABASE_URL names a
    PostgreSQL database — every database-backed test again on PostgreSQL."""
    python = str(BIN / "python")
    steps: list[tuple[str, list[str], dict[str, str]]] = []
    sqlite_env = {k: v for k, v in os.environ.items() if k != "LEAD_SLA_TEST_DATABASE_URL"}
    if not extra:
        steps += [
            ("ruff", [python, "-m", "ruff", "check", "service", "tests", "bench"], sqlite_env),
            ("ruff format", [python, "-m", "ruff", "format", "--check", "service", "tests", "bench"],
             sqlite_env),
            ("mypy", [python, "-m", "mypy"], sqlite_env),
        ]
    steps.append(("tests on SQLite", [python, "-m", "pytest", *extra], sqlite_env))
    if os.environ.get("LEAD_SLA_TEST_DATABASE_URL"):
        targets = extra or ["tests/integration", "tests/api", "tests/e2e"]
        steps.append(("tests on PostgreSQL", [python, "-m", "pytest", *targets], dict(os.environ)))
    failed = []
    for name, command, env in steps:
        print(f"\n=== {name}: {' '.join(command[1:])}", flush=True)
        if subprocess.call(command, env=env) != 0:
            failed.append(name)
    print("\n=== " + ("failed: " + ", ".join(failed) if failed else "all green"), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
