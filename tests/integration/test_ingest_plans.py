"""On PostgreSQL deliveries are stored through a pool of their own whose connections plan each
statement once (generic plans), and every plan those statements can get looks rows up by index:
statistics made while the tables were small (a new database, autovacuum behind) never turn a
delivery into scans of whole tables. The service's other connections plan as before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service.clock import FrozenClock
from service.config import Settings
from service.db import create_engine, session_factory
from service.event_codec import event_from_json
from service.ingest import store_delivery
from service.policies import PolicyStore
from service.runtime import build_runtime
from service.sla.types import LeadEvent
from tests.conftest import PG_URL
from tests.helpers import activity, status

pytestmark = pytest.mark.skipif(not PG_URL, reason="plan caching is PostgreSQL's")

_SCANS = text(
    "SELECT relname, seq_scan, idx_tup_fetch FROM pg_stat_xact_user_tables "
    "WHERE relname IN ('leads', 'lead_events', 'sla_cycles')"
)


async def _scans(session: AsyncSession) -> dict[str, tuple[int, int]]:
    """Per table: this backend's scans so far and the rows it fetched through indexes (counted
    per backend, and reported late: compare before and after)."""
    return {name: (scans, fetched) for name, scans, fetched in await session.execute(_SCANS)}


def _events(prefix: str, leads: range, clock: FrozenClock, stage: str) -> list[LeadEvent]:
    at = clock.now() + timedelta(minutes={"mql": 0, "call": 5}[stage])
    return [
        event_from_json(
            status(f"{prefix}-{n}", f"L-{n}", at, "mql")
            if stage == "mql"
            else activity(f"{prefix}-{n}", f"L-{n}", at)
        )
        for n in leads
    ]


async def _deliver(session: AsyncSession, events: list[LeadEvent], clock: FrozenClock) -> None:
    policies = PolicyStore(None, {}).current
    await store_delivery(session, "generic", events, None, clock.now(), policies)


async def test_a_delivery_reads_and_writes_by_index_on_stale_statistics(
    database_url: str, clock: FrozenClock
) -> None:
    # plans are per connection: one throughout
    engine = create_engine(database_url, pool_size=1, plan_once=True)
    sessions = session_factory(engine)
    try:
        async with sessions() as session, session.begin():
            await _deliver(session, _events("a", range(10), clock, "mql"), clock)
        async with sessions() as session, session.begin():
            await session.execute(text("ANALYZE leads, lead_events, sla_cycles"))
        for start in range(10, 3000, 1000):  # grown 300-fold since the statistics were made
            async with sessions() as session, session.begin():
                seeds = _events("a", range(start, start + 1000), clock, "mql")
                await _deliver(session, seeds, clock)
        for first in (0, 100):  # the first delivery makes the plans, the second reuses them
            async with sessions() as session, session.begin():
                before = await _scans(session)
                stops = _events(f"c{first}", range(first, first + 100), clock, "call")
                await _deliver(session, stops, clock)
                after = await _scans(session)
                for table, (scans, fetched) in after.items():
                    assert scans == before[table][0], f"{table} scanned"
                    # a few rows per lead touched; each table holds thousands
                    assert fetched - before[table][1] <= 500, f"{table} read through"
        async with sessions() as session:
            stopped = "SELECT count(*) FROM sla_cycles WHERE stopped_at IS NOT NULL"
            assert await session.scalar(text(stopped)) == 200
    finally:
        await engine.dispose()


async def test_only_the_pool_that_stores_deliveries_plans_once(settings: Settings) -> None:
    runtime = build_runtime(settings, FrozenClock(datetime(2026, 11, 23, tzinfo=UTC)), "all")
    modes = text("SELECT current_setting('plan_cache_mode'), current_setting('enable_seqscan')")
    try:
        for sessions, expected in (
            (runtime.ingest, ("force_generic_plan", "off")),
            (runtime.sessions, ("auto", "on")),
            (runtime.reads, ("auto", "on")),
        ):
            for _ in range(2):  # a new connection, then the same one from the pool
                async with sessions() as session, session.begin():
                    assert tuple((await session.execute(modes)).one()) == expected
    finally:
        await runtime.close()
