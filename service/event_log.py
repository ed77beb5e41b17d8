"""The event log and the lead rows it derives, as few statements as a delivery allows.

A delivery costs one statement to lock the leads it names, one to create the new ones (already
holding their folded state), and one to store the raw request with its events. Ingest's cost is
dominated by statements, not by the SLA fold, so each one saved here is throughput.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from service.event_codec import event_from_json, event_to_json
from service.models import Lead, LeadEventRow, RawRequest
from service.repository import chunks, insert_ignoring_conflicts, is_postgresql
from service.sla.types import LeadEvent, LeadState, apply_event, sort_and_dedupe


async def lock_leads(session: AsyncSession, lead_pks: Iterable[int]) -> list[Lead]:
    return await _locked(session, [Lead.id.in_(part) for part in chunks(sorted(set(lead_pks)))])


async def lock_leads_by_crm_id(
    session: AsyncSession, source: str, external_ids: Iterable[str]
) -> dict[str, Lead]:
    wanted = sorted(set(external_ids))
    conditions = [(Lead.source == source) & Lead.external_id.in_(part) for part in chunks(wanted)]
    return {lead.external_id: lead for lead in await _locked(session, conditions)}


async def _locked(session: AsyncSession, conditions: Sequence[ColumnElement[bool]]) -> list[Lead]:
    """The leads matching each condition, locked in id order on PostgreSQL so that two
    deliveries for the same lead run one after the other and never deadlock; the second then
    reads the first one's events. SQLite serialises writers anyway."""
    found: list[Lead] = []
    for condition in conditions:
        query = (
            select(Lead)
            .where(condition)
            .order_by(Lead.id)
            .execution_options(populate_existing=True)
        )
        if is_postgresql(session):
            query = query.with_for_update()
        found.extend((await session.scalars(query)).all())
    return found


async def create_leads(
    session: AsyncSession, source: str, deliveries: Mapping[str, Sequence[LeadEvent]]
) -> dict[str, Lead]:
    """Insert leads not stored yet, each with the state its delivered events give it. A lead a
    concurrent delivery created first is left out (the caller locks and re-reads it)."""
    rows = [
        {"source": source, **lead_values(external_id, sort_and_dedupe(list(events)))}
        for external_id, events in sorted(deliveries.items())  # sorted: no insert deadlocks
    ]
    created: dict[str, Lead] = {}
    for part in chunks(rows):
        statement = insert_ignoring_conflicts(session, Lead).returning(Lead)
        for lead in (await session.scalars(statement, list(part))).all():
            created[lead.external_id] = lead
    return created


def lead_values(external_id: str, history: Sequence[LeadEvent]) -> dict[str, Any]:
    """The columns of a lead row, folded from its whole, ordered history."""
    state = LeadState(id=external_id)
    for event in history:
        state = apply_event(state, event)
    return {
        "external_id": external_id,
        "status": state.status,
        "owner": state.owner,
        "team": state.team,
        "email": state.email,
        "name": state.name,
        "lead_source": state.source,
        "segment": state.segment,
        "priority": state.priority,
        "score": state.score,
        "country": state.country,
        "attributes": dict(state.attributes),
        "deleted": state.deleted,
        "created_at": state.created_at,
        "updated_at": state.updated_at,
        "last_event_at": history[-1].occurred_at if history else None,
    }


async def append_events(
    session: AsyncSession,
    source: str,
    events: Iterable[LeadEvent],
    lead_pks: Mapping[str, int],
    raw: tuple[Mapping[str, str], bytes] | None,
    now: datetime,
) -> set[str]:
    """Store the raw request and append the events; returns the ids of the events that were
    new (a redelivered event hits the unique key and is skipped)."""
    rows = [
        {
            "lead_id": lead_pks[event.lead.id],
            "event_id": event.event_id,
            "type": event.type,
            "occurred_at": event.occurred_at,
            "data": event_to_json(event),
        }
        for event in events
    ]
    if is_postgresql(session):
        return await _append_postgresql(session, source, rows, raw, now)
    raw_id = None
    if raw is not None:
        raw_row = RawRequest(source=source, received_at=now, headers=dict(raw[0]), body=raw[1])
        session.add(raw_row)
        await session.flush()
        raw_id = raw_row.id
    common = {"source": source, "received_at": now, "raw_request_id": raw_id}
    inserted: set[str] = set()
    statement = insert_ignoring_conflicts(session, LeadEventRow).returning(LeadEventRow.event_id)
    for part in chunks(rows):
        # rows as parameters, not .values(rows): the statement compiles once and is cached
        result = await session.execute(statement, [{**row, **common} for row in part])
        inserted.update(result.scalars())
    return inserted


# PostgreSQL: the raw request and every event in one statement over arrays.
_EVENTS_FROM_ARRAYS = """
SELECT e.lead_id, :source, e.event_id, e.type, e.occurred_at, :received_at, CAST(e.data AS json),
       {raw_id}
FROM unnest(CAST(:lead_id AS bigint[]), CAST(:event_id AS varchar[]), CAST(:type AS varchar[]),
            CAST(:occurred_at AS timestamptz[]), CAST(:data AS text[]))
     AS e(lead_id, event_id, type, occurred_at, data)
"""
_INSERT_EVENTS = """
INSERT INTO lead_events (lead_id, source, event_id, type, occurred_at, received_at, data,
                         raw_request_id)
{select}
ON CONFLICT (source, event_id) DO NOTHING
RETURNING event_id
"""
_APPEND_WITH_RAW = text(
    "WITH raw AS (INSERT INTO raw_requests (source, received_at, headers, body) "
    "VALUES (:source, :received_at, CAST(:headers AS json), :body) RETURNING id)"
    + _INSERT_EVENTS.format(select=_EVENTS_FROM_ARRAYS.format(raw_id="(SELECT id FROM raw)"))
)
_APPEND = text(_INSERT_EVENTS.format(select=_EVENTS_FROM_ARRAYS.format(raw_id="NULL")))


async def _append_postgresql(
    session: AsyncSession,
    source: str,
    rows: list[dict[str, Any]],
    raw: tuple[Mapping[str, str], bytes] | None,
    now: datetime,
) -> set[str]:
    arrays: dict[str, Any] = {
        name: [row[name] for row in rows] for name in ("lead_id", "event_id", "type", "occurred_at")
    }
    arrays["data"] = [json.dumps(row["data"]) for row in rows]
    arrays.update(source=source, received_at=now)
    if raw is None:
        result = await session.execute(_APPEND, arrays)
    else:
        arrays.update(headers=json.dumps(dict(raw[0])), body=raw[1])
        result = await session.execute(_APPEND_WITH_RAW, arrays)
    return set(result.scalars())


async def load_histories(
    session: AsyncSession, lead_pks: Sequence[int]
) -> dict[int, list[LeadEvent]]:
    """Each lead's events in application order."""
    histories: dict[int, list[LeadEvent]] = defaultdict(list)
    for part in chunks(lead_pks):
        rows = await session.execute(
            select(LeadEventRow.lead_id, LeadEventRow.data).where(LeadEventRow.lead_id.in_(part))
        )
        for lead_pk, data in rows:
            histories[lead_pk].append(event_from_json(data))
    return {pk: sort_and_dedupe(events) for pk, events in histories.items()}
