"""An event id is unique per source: a second event reusing it is a redelivery even when it names
another lead. A lead first seen only through such a redelivery has no history yet, and its first
real event must fold as its whole history."""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI
from sqlalchemy import select

from service.clock import FrozenClock
from service.event_codec import event_from_json
from service.ingest import store_delivery
from service.models import Cycle, Lead
from service.runtime import Runtime
from tests.helpers import status


async def test_a_lead_known_only_from_a_redelivery_folds_its_first_real_event(
    app: FastAPI, clock: FrozenClock
) -> None:
    runtime: Runtime = app.state.runtime
    t0 = clock.now() - timedelta(minutes=10)
    deliveries = [
        [status("e1", "L-1", t0, "new")],
        [status("e1", "L-2", t0, "new")],  # the same event id again: a redelivery
        [status("e2", "L-2", t0 + timedelta(minutes=1), "mql", owner="rep-7")],
    ]
    results = []
    for delivery in deliveries:
        async with runtime.sessions() as session, session.begin():
            results.append(await store_delivery(
                session, "generic", [event_from_json(e) for e in delivery], None, clock.now(),
                runtime.policies.current,
            ))  # fmt: skip
    assert [(r.accepted, r.duplicates) for r in results] == [(1, 0), (0, 1), (1, 0)]
    async with runtime.sessions() as session:
        lead = (await session.scalars(select(Lead).where(Lead.external_id == "L-2"))).one()
        cycles = (await session.scalars(select(Cycle).where(Cycle.lead_id == lead.id))).all()
    assert (lead.status, lead.owner) == ("mql", "rep-7")
    assert cycles, "turning MQL starts the lead's clocks"
