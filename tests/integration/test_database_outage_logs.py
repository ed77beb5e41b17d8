"""A database that cannot be reached is told plainly: ``serve`` and ``migrate`` exit with one line
instead of a traceback, a broken policy file stops ``serve`` before anything starts, and a
running worker logs an outage once when it begins, once a minute while it lasts and once when
it ends, not a traceback per tick."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from service import failure_streaks, scheduler
from service.clock import FrozenClock
from service.config import Settings
from service.runtime import Runtime, build_runtime
from tests.workers import ROOT, free_port


def _unreachable_database() -> str:
    """A PostgreSQL URL on a loopback port nothing listens on, with a password to keep out of
    messages."""
    return f"postgresql+asyncpg://lead:s3cret-pw@127.0.0.1:{free_port()}/lead_sla"


def _lead_sla(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=cwd, env=environment, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["migrate"]])
def test_an_unreachable_database_is_one_line_and_exit_1(tmp_path: Path, command: list[str]) -> None:
    url = _unreachable_database()
    done = _lead_sla(tmp_path, *command, LEAD_SLA_DATABASE_URL=url)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("lead-sla: cannot migrate the database at postgresql+asyncpg://")
    assert "127.0.0.1" in lines[0] and "Connect" in lines[0]
    assert "s3cret-pw" not in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_with_a_broken_policy_file_prints_its_errors_and_starts_nothing(
    tmp_path: Path,
) -> None:
    policies = tmp_path / "policies.yaml"
    policies.write_text("policies:\n  - id: first-touch\n    kind: response\n")
    database = tmp_path / "lead-sla.db"
    done = _lead_sla(
        tmp_path, "serve", "--port", "0",
        LEAD_SLA_DATABASE_URL=f"sqlite+aiosqlite:///{database}",
        LEAD_SLA_POLICY_FILE=str(policies),
    )  # fmt: skip
    assert done.returncode == 1
    assert f"{policies}:2: policies[0].target: required" in done.stderr.splitlines()
    assert "Traceback" not in done.stderr
    assert not database.exists()  # not even migrated


@pytest.fixture
async def unreachable_runtime() -> AsyncIterator[Runtime]:
    settings = Settings(database_url=_unreachable_database(), sweep_concurrency=2)
    runtime = build_runtime(settings, FrozenClock(datetime(2026, 11, 24, 12, tzinfo=UTC)), "all")
    try:
        yield runtime
    finally:
        await runtime.close()


def _tick(runtime: Runtime, name: str) -> Callable[[], Awaitable[None]]:
    job = scheduler.build_scheduler(runtime).get_job(name)
    assert job is not None
    tick: Callable[[], Awaitable[None]] = job.func
    return tick


def _records(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "service.scheduler" and name in r.getMessage()]


@pytest.mark.parametrize("name", ["sweep_tick", "dispatch_tick", "gauges_tick"])
async def test_an_outage_is_logged_once_then_once_a_minute_without_tracebacks(
    unreachable_runtime: Runtime,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    caplog.set_level(logging.INFO, logger="service.scheduler")
    tick = _tick(unreachable_runtime, name)
    for _ in range(3):
        await tick()  # never raises: the scheduler would stop calling a job that does
    (first,) = _records(caplog, name)
    assert first.levelno == logging.WARNING and not first.exc_info
    assert f"{name} failed (database unavailable: ConnectionRefusedError" in first.getMessage()
    assert "s3cret-pw" not in first.getMessage()

    monkeypatch.setattr(failure_streaks, "STILL_FAILING_LOG_SECONDS", 0.0)
    await tick()
    still = _records(caplog, name)[1:]
    assert len(still) == 1 and not still[0].exc_info
    assert f"{name} still failing: 4 in a row over" in still[0].getMessage()


async def test_a_failing_tick_logs_its_traceback_once_and_its_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="service.scheduler")
    outcomes = [ValueError("a bug"), ValueError("a bug"), None]

    async def broken_tick() -> None:
        error = outcomes.pop(0)
        if error is not None:
            raise error

    tick = scheduler._logged(broken_tick)
    for _ in range(3):
        await tick()
    first, recovered = _records(caplog, "broken_tick")
    assert first.levelno == logging.ERROR and first.exc_info
    assert recovered.levelno == logging.INFO
    assert "broken_tick recovered after 2 failures" in recovered.getMessage()
