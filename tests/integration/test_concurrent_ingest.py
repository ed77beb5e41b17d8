"""Two transactions touching one lead at the same time: the second waits for the first and folds
its events too. On PostgreSQL the test checks that the second really was waiting on a lock when
the first committed; on SQLite writers are serialised by ``BEGIN IMMEDIATE``."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from fastapi import FastAPI
from sqlalchemy import text

from service.clock import FrozenClock
from service.event_codec import event_from_json
from service.ingest import store_delivery
from service.models import Cycle, Lead, OutboxMessage
from service.runtime import Runtime
from service.sla.types import LeadEvent
from service.sweep import fire_due_batch
from tests.conftest import PG_URL
from tests.helpers import activity, status
from tests.store import rows

MIN = timedelta(minutes=1)


@pytest.fixture
def runtime(app: FastAPI) -> Runtime:
    result: Runtime = app.state.runtime
    return result


async def ingest(runtime: Runtime, now: FrozenClock, *events: LeadEvent) -> None:
    async with runtime.sessions() as session, session.begin():
        await store_delivery(session, "generic", events, None, now.now(),
                             runtime.policies.current)  # fmt: skip


async def wait_until_blocked(runtime: Runtime, task: asyncio.Task[None]) -> None:
    """Until the other transaction waits on a row lock (PostgreSQL), or has had the chance to
    queue behind the write lock (SQLite)."""
    for _ in range(250):
        await asyncio.sleep(0.02)
        assert not task.done(), "the second transaction did not wait for the first"
        if not PG_URL:
            if _ >= 5:
                return
            continue
        async with runtime.engine.connect() as connection:
            waiting = await connection.scalar(
                text("SELECT count(*) FROM pg_stat_activity "
                     "WHERE datname = current_database() AND wait_event_type = 'Lock'")
            )  # fmt: skip
        if waiting:
            return
    raise AssertionError("the second transaction never waited on a lock")


async def test_concurrent_deliveries_for_one_lead_both_apply(
    runtime: Runtime, clock: FrozenClock
) -> None:
    t0 = clock.now() - 20 * MIN
    await ingest(runtime, clock, event_from_json(status("e0", "L-1", t0, "new", owner="rep-7")))
    mql = event_from_json(status("e1", "L-1", t0 + MIN, "mql"))
    call = event_from_json(activity("e2", "L-1", t0 + 5 * MIN))

    async with runtime.sessions() as first:
        async with first.begin():
            await store_delivery(first, "generic", [mql], None, clock.now(),
                                 runtime.policies.current)  # fmt: skip
            second = asyncio.create_task(ingest(runtime, clock, call))
            await wait_until_blocked(runtime, second)
        await second

    (lead,) = await rows(runtime, Lead)
    assert lead.status == "mql"
    (cycle,) = await rows(runtime, Cycle, Cycle.policy_id == "first-touch")
    assert (cycle.state, cycle.stopped_at) == ("met", t0 + 5 * MIN)


async def test_late_call_while_the_sweep_announces_the_breach_is_corrected(
    runtime: Runtime, clock: FrozenClock
) -> None:
    t0 = clock.now()
    await ingest(runtime, clock, event_from_json(status("e1", "L-1", t0, "mql", owner="rep-7")))
    clock.advance(minutes=61)
    late_call = event_from_json(activity("e2", "L-1", t0 + 30 * MIN))

    async with runtime.sessions() as sweeper:
        async with sweeper.begin():
            claimed, fired = await fire_due_batch(
                sweeper, clock.now(), runtime.policies.current, 100, 60.0
            )
            assert (claimed, fired) == (1, 4)  # two reminders (superseded), breach, escalation
            late = asyncio.create_task(ingest(runtime, clock, late_call))
            await wait_until_blocked(runtime, late)
        await late

    (cycle,) = await rows(runtime, Cycle, Cycle.policy_id == "first-touch")
    assert (cycle.state, cycle.announced_outcome) == ("met", "met")
    sent = {m.type for m in await rows(runtime, OutboxMessage)}
    assert sent == {"sla.breached", "sla.escalated", "sla.corrected"}
