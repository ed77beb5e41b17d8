"""Lead fields hold whatever JSON a CRM sends, including integers too large for 64 bits, and come
back unchanged."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy import select

from service import json_codec
from service.clock import FrozenClock
from service.event_codec import event_from_json
from service.ingest import store_delivery
from service.models import Lead, LeadEventRow
from service.runtime import Runtime
from tests.helpers import status

HUGE = 2**70  # a CRM's numeric id custom field


def test_codec_round_trips_what_orjson_alone_refuses() -> None:
    value = {"id": HUGE, "name": "Zoë", "score": 0.1, "tags": [1, None, True]}
    assert json_codec.loads(json_codec.dumps(value)) == value


async def test_a_lead_with_a_huge_integer_field_is_stored_and_read_back(
    app: FastAPI, clock: FrozenClock
) -> None:
    runtime: Runtime = app.state.runtime
    event = event_from_json(status("e1", "L-1", clock.now(), "mql", attributes={"erp_id": HUGE}))
    async with runtime.sessions() as session, session.begin():
        result = await store_delivery(session, "generic", [event], None, clock.now(),
                                      runtime.policies.current)  # fmt: skip
    assert result.accepted == 1
    async with runtime.sessions() as session:
        lead = (await session.scalars(select(Lead))).one()
        stored = (await session.scalars(select(LeadEventRow.data))).one()
    assert lead.attributes == {"erp_id": HUGE}
    assert stored["lead"]["attributes"] == {"erp_id": HUGE}
