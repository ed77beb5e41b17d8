"""On PostgreSQL a delivery's statements are planned once per connection (generic plans), and
only inside the delivery's transaction: the connection's other queries keep plans made for their
parameters."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from service.clock import FrozenClock
from service.db import create_engine, session_factory
from service.event_codec import event_from_json
from service.ingest import store_delivery
from service.policies import PolicyStore
from tests.conftest import PG_URL
from tests.helpers import status

pytestmark = pytest.mark.skipif(not PG_URL, reason="plan caching is PostgreSQL's")


async def test_generic_plans_are_for_the_delivery_transaction_only(
    database_url: str, clock: FrozenClock
) -> None:
    engine = create_engine(database_url, pool_size=1)  # one connection: the same one throughout
    sessions = session_factory(engine)
    policies = PolicyStore(None, {}).current
    mode = text("SHOW plan_cache_mode")
    try:
        async with sessions() as session, session.begin():
            assert await session.scalar(mode) == "auto"
        async with sessions() as session, session.begin():
            event = event_from_json(status("e1", "L-1", clock.now(), "mql"))
            await store_delivery(session, "generic", [event], None, clock.now(), policies)
            assert await session.scalar(mode) == "force_generic_plan"
        async with sessions() as session, session.begin():
            assert await session.scalar(mode) == "auto"
            assert await session.scalar(text("SELECT count(*) FROM lead_events")) == 1
    finally:
        await engine.dispose()
