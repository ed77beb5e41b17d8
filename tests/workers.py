"""Real worker processes for the restart and multi-worker tests: a policy with one webhook per
breach step, many cycles already overdue, and ``lead-sla serve --role worker`` as a subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy import select

from service.config import Settings
from service.db import create_engine, session_factory, sqlite_path
from service.event_codec import event_from_json
from service.ingest import store_delivery
from service.models import Cycle, OutboxMessage
from service.policies import PolicyStore
from tests.conftest import RECEIVER_SECRET, Receiver
from tests.helpers import status

ROOT = Path(__file__).resolve().parents[1]
# One webhook per breach: the outbox holds one row per cycle.
POLICY = """\
channels:
  ops: {type: webhook, url: "env:RECEIVER_URL", secret: "env:RECEIVER_SECRET"}
teams: [emea]
policies:
  - id: first-touch
    start: {status: [mql]}
    stop: {activity: [call]}
    target: 1h
    notify:
      breach: [{channel: ops, to: owner}]
"""
TARGET = timedelta(hours=1)


def write_policy(directory: Path) -> Path:
    path = directory / "worker-policies.yaml"
    path.write_text(POLICY)
    return path


def environment(receiver: Receiver) -> dict[str, str]:
    return {"RECEIVER_URL": receiver.url, "RECEIVER_SECRET": RECEIVER_SECRET}


def worker_settings(database_url: str, policy: Path, receiver: Receiver) -> Settings:
    """In-process worker settings for the policy of ``write_policy``, notifying ``receiver``."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=database_url,
        policy_file=str(policy),
        env_overrides=environment(receiver),
    )


async def seed_cycles(
    database_url: str,
    policy: Path,
    receiver: Receiver,
    leads: int,
    first_due: datetime,
    last_due: datetime,
) -> None:
    """``leads`` MQLs whose deadlines are spread evenly from ``first_due`` to ``last_due``."""
    store = PolicyStore(str(policy), environment(receiver))
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    step = (last_due - first_due) / max(1, leads - 1)
    try:
        for first in range(0, leads, 500):
            events = [
                event_from_json(status(f"e{i}", f"L-{i:05}", first_due + i * step - TARGET, "mql",
                                       owner=f"rep-{i % 9}"))
                for i in range(first, min(leads, first + 500))
            ]  # fmt: skip
            async with sessions() as session, session.begin():
                await store_delivery(session, "generic", events, None, first_due, store.current)
    finally:
        await engine.dispose()


async def read_scalar(database_url: str, sql: str) -> int:
    """One number from the database without taking its write lock, so polling a busy SQLite
    worker never queues behind it."""
    path = sqlite_path(database_url)
    if path is not None:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
            return int(db.execute(sql).fetchone()[0])
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(dsn)
    try:
        return int(await connection.fetchval(sql))
    finally:
        await connection.close()


async def expected_keys(database_url: str) -> tuple[set[str], list[OutboxMessage]]:
    """The idempotency key each cycle's breach must have produced, and the outbox rows."""
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            cycle_ids = list(await session.scalars(select(Cycle.id)))
            outbox = list(await session.scalars(select(OutboxMessage)))
    finally:
        await engine.dispose()
    return {f"cycle-{cid}-breach-0" for cid in cycle_ids}, outbox


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_worker(
    database_url: str,
    policy: Path,
    receiver: Receiver,
    cwd: Path,
    settings: Mapping[str, str] | None = None,
    port: int | None = None,
) -> subprocess.Popen[bytes]:
    """``python -m service serve --role worker`` (on a free port unless one is given)."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "LEAD_SLA_DATABASE_URL": database_url,
        "LEAD_SLA_POLICY_FILE": str(policy),
        "LEAD_SLA_LOG_LEVEL": "WARNING",
        **environment(receiver),
        **(settings or {}),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--role", "worker", "--port",
         str(port or free_port())],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


async def wait_for(
    condition: Callable[[], bool | Awaitable[bool]],
    timeout: float,
    what: str,
    progress: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Poll a real process's progress, up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result if isinstance(result, bool) else await result:
            return
        if time.monotonic() > deadline:
            seen = await progress() if progress is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what} {seen}")
        await asyncio.sleep(0.05)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a worker this test started (SIGTERM, then SIGKILL)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def received_ids(receiver: Receiver) -> list[str]:
    return [request["headers"]["webhook-id"] for request in list(receiver.requests)]


def serving(port: int) -> bool:
    """The worker answers its health probe: its lifespan (lock, scheduler) has started."""
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
