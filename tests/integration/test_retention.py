"""The hourly purge: raw requests and delivered notifications go after their retention, in
batches; the event log is left exactly as it was."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from service.clock import FrozenClock
from service.models import LeadEventRow, OutboxMessage, RawRequest
from service.repository import is_postgresql
from service.retention import purge_expired
from service.runtime import Runtime
from tests.helpers import post_events, status
from tests.store import rows


@pytest.fixture
def runtime(app: FastAPI) -> Runtime:
    result: Runtime = app.state.runtime
    return result


async def event_versions(runtime: Runtime) -> list[tuple[object, ...]]:
    """Every stored event with its row version on PostgreSQL (``xmin``: changes when a row is
    rewritten, even to the same values)."""
    async with runtime.sessions() as session:
        version = "CAST(xmin AS text)" if is_postgresql(session) else "NULL"
        result = await session.execute(
            text(
                f"SELECT id, event_id, raw_request_id, data, {version} FROM lead_events ORDER BY id"
            )
        )
        return [tuple(row) for row in result]


async def add_message(runtime: Runtime, key: str, status_: str, at: datetime) -> None:
    async with runtime.sessions() as session, session.begin():
        session.add(
            OutboxMessage(
                key=key, cycle_id=None, type="sla.breached", channel="ops", channel_type="webhook",
                recipient=None, payload={}, status=status_, attempts=1, next_attempt_at=at,
                created_at=at, delivered_at=at if status_ == "delivered" else None,
            )
        )  # fmt: skip


async def test_purge_removes_expired_requests_and_messages_and_leaves_events_alone(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime
) -> None:
    old = clock.now()
    for n in range(3):  # three old requests, so that batches of two take two rounds
        delivery = status(f"old-{n}", f"L-{n}", old, "mql", owner="rep-1")
        assert (await post_events(client, clock.now(), delivery)).status_code == 202
    await add_message(runtime, "old-delivered", "delivered", old)
    await add_message(runtime, "old-pending", "pending", old)
    await add_message(runtime, "old-dead", "dead", old)
    recent = clock.advance(days=31)
    delivery = status("new-0", "L-9", recent, "mql", owner="rep-1")
    assert (await post_events(client, clock.now(), delivery)).status_code == 202
    await add_message(runtime, "new-delivered", "delivered", recent - timedelta(days=1))
    events_before = await event_versions(runtime)
    (recent_request,) = [r.id for r in await rows(runtime, RawRequest) if r.received_at == recent]

    purged = await purge_expired(runtime.sessions, clock.now(), 30, 14, batch_size=2)

    assert purged == {"raw_requests": 3, "outbox": 1}
    assert [r.id for r in await rows(runtime, RawRequest)] == [recent_request]
    kept = sorted(
        m.key for m in await rows(runtime, OutboxMessage) if m.key.startswith(("old", "new"))
    )
    assert kept == ["new-delivered", "old-dead", "old-pending"]
    assert await event_versions(runtime) == events_before  # not one event rewritten
    assert len(await rows(runtime, LeadEventRow)) == 4
    assert await purge_expired(runtime.sessions, clock.now(), 30, 14) == {
        "raw_requests": 0,
        "outbox": 0,
    }
