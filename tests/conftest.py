"""Shared fixtures: a clean, migrated database per test (SQLite, or PostgreSQL when
LEAD_SLA_TEST_DATABASE_URL is set), a frozen clock, the app, and a real loopback receiver."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from service.app import create_app
from service.clock import FrozenClock
from service.config import Settings
from service.db import migrate

PG_URL = os.environ.get("LEAD_SLA_TEST_DATABASE_URL")
FIXTURES = Path(__file__).parent / "fixtures"
GENERIC_SECRET = "whsec_" + base64.b64encode(b"generic-test-secret-0123456789").decode()
RECEIVER_SECRET = "whsec_" + base64.b64encode(b"receiver-test-secret-987654321").decode()
TABLES = ("outbox", "status_entries", "sla_cycles", "lead_events", "raw_requests", "leads")


def backend() -> str:
    return "postgresql" if PG_URL else "sqlite"


@pytest.fixture(scope="session")
def _template(tmp_path_factory: pytest.TempPathFactory) -> str:
    if PG_URL:
        # Built from nothing by the migrations on every run, as a fresh deployment would be.
        asyncio.run(_execute(PG_URL, "DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        migrate(PG_URL)
        return PG_URL
    path = tmp_path_factory.mktemp("template") / "template.db"
    migrate(f"sqlite+aiosqlite:///{path}")
    return str(path)


async def _execute(url: str, sql: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture
def database_url(_template: str, tmp_path: Path) -> str:
    """A clean, migrated database for this test alone."""
    if PG_URL:
        asyncio.run(_execute(PG_URL, f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
        return PG_URL
    target = tmp_path / "lead-sla.db"
    shutil.copy(_template, target)
    return f"sqlite+aiosqlite:///{target}"


@pytest.fixture
def clock() -> FrozenClock:
    # A Monday morning in São Paulo (12:00 UTC = 09:00 local).
    return FrozenClock(datetime(2026, 11, 23, 12, 0, tzinfo=UTC))


class _ReceiverServer(ThreadingHTTPServer):
    # The dispatcher opens many connections at once; the default backlog of 5 would drop SYNs
    # and stall each one for a second-long TCP retransmit.
    request_queue_size = 256


class Receiver:
    """A real HTTP server on loopback that records what it is sent and answers as told."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.responses: list[tuple[int, dict[str, str]]] = []  # consumed first, then 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length)
                receiver.requests.append(
                    {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                     "body": body}
                )  # fmt: skip
                status, headers = receiver.responses.pop(0) if receiver.responses else (200, {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _ReceiverServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/sla"
        # A short poll interval: shutdown() waits up to one interval, once per test.
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r["body"]) for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def settings(database_url: str, receiver: Receiver) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=database_url,
        policy_file=str(FIXTURES / "policies.yaml"),
        delivery_backoff_base_seconds=1.0,
        env_overrides={
            "LEAD_SLA_WEBHOOK_SECRET_GENERIC": GENERIC_SECRET,
            "RECEIVER_URL": receiver.url,
            "RECEIVER_SECRET": RECEIVER_SECRET,
        },
    )


@pytest.fixture
async def app(settings: Settings, clock: FrozenClock) -> AsyncIterator[FastAPI]:
    application = create_app(settings, clock=clock, run_scheduler=False)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http
