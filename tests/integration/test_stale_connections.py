"""Pooled connections the database closed (a restart, a failover) cost no webhook a 503: the
pool is not pinged before each use, so the first statement on such a connection fails, and the
webhook is stored on a new connection."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from service.clock import FrozenClock
from service.models import LeadEventRow
from service.runtime import Runtime
from tests.conftest import PG_URL
from tests.helpers import post_events, status
from tests.store import count

pytestmark = pytest.mark.skipif(not PG_URL, reason="connections are PostgreSQL's")


async def _close_connections_of(database_url: str) -> int:
    """What a database restart does to a client's pooled connections."""
    database = database_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return int(
            await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
        )
    finally:
        await admin.close()


async def test_webhook_after_the_database_closed_the_pooled_connections_is_stored(
    app: FastAPI, client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    runtime: Runtime = app.state.runtime
    t = clock.now()
    assert (await post_events(client, t, status("e1", "L-1", t, "mql"))).status_code == 202
    assert await _close_connections_of(runtime.settings.database_url) >= 1

    response = await post_events(client, t, status("e2", "L-2", t, "mql"))
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 1, "duplicates": 0}
    assert await count(runtime, LeadEventRow) == 2
