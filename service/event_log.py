"""The event log and the lead rows it derives, as few statements as a delivery allows.

A delivery costs one statement to lock the leads it names, one to create the new ones (already
holding their folded state), and one to store the raw request with its events and (on
PostgreSQL) read back the histories they extend. Ingest's cost is dominated by statements, not
by the SLA fold, so each one saved here is throughput.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    BindParameter,
    String,
    Table,
    bindparam,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession

from service import json_codec
from service.bulk import Write, insert_new, keyed_select
from service.cycle_rows import CyclesByLead, cycle_from_json
from service.event_codec import event_from_json, event_to_json
from service.models import Lead, LeadEventRow, RawRequest
from service.repository import chunks, insert_ignoring_conflicts, is_postgresql
from service.sla.types import LeadEvent, LeadState, lead_states, sort_and_dedupe

LEADS = cast(Table, Lead.__table__)


@dataclass(slots=True, eq=False)
class LeadRow:
    """A lead as ingest reads and writes it: its keys and the columns ``lead_values`` derives."""

    id: int
    source: str
    external_id: str
    values: dict[str, Any]
    changed: bool = False

    @property
    def status(self) -> str | None:
        status: str | None = self.values["status"]
        return status

    def update(self, values: Mapping[str, Any]) -> None:
        """Take a fresh fold's values; the row is written only if one of them differs."""
        if any(self.values[name] != value for name, value in values.items()):
            self.values.update(values)
            self.changed = True


# SQLite's statements, built once: constructing one per request costs more than running it.
_KEYS: BindParameter[Any] = bindparam("keys", expanding=True)
_BY_ID = select(LEADS).where(LEADS.c.id.in_(_KEYS))
_BY_CRM_ID = select(LEADS).where(
    (LEADS.c.source == bindparam("source")) & LEADS.c.external_id.in_(_KEYS)
)
_HISTORIES = select(LeadEventRow.lead_id, LeadEventRow.data).where(LeadEventRow.lead_id.in_(_KEYS))
_EVENTS = cast(Table, LeadEventRow.__table__)


async def lock_leads(session: AsyncSession, lead_pks: Iterable[int]) -> list[LeadRow]:
    """The leads, locked in id order on PostgreSQL: two deliveries for the same lead then run
    one after the other and never deadlock, and the second reads the first one's events.
    SQLite serialises writers anyway."""
    pks = sorted(set(lead_pks))
    if is_postgresql(session):
        return await _lead_rows(session, keyed_select(LEADS, "id", lock=True), pks, {})
    return await _lead_rows(session, _BY_ID, pks, {})


async def lock_leads_by_crm_id(
    session: AsyncSession, source: str, external_ids: Iterable[str]
) -> dict[str, LeadRow]:
    """As ``lock_leads``, by the CRM's ids."""
    ids = sorted(set(external_ids))
    if is_postgresql(session):
        query = keyed_select(LEADS, "external_id", where="t.source = :source", lock=True)
    else:
        query = _BY_CRM_ID
    leads = await _lead_rows(session, query, ids, {"source": source})
    return {lead.external_id: lead for lead in leads}


async def _lead_rows(
    session: AsyncSession, query: Any, keys: Sequence[Any], params: dict[str, Any]
) -> list[LeadRow]:
    found: list[LeadRow] = []
    for part in chunks(keys):
        for row in (await session.execute(query, {"keys": list(part), **params})).mappings():
            values = {name: row[name] for name in VALUE_COLUMNS}
            found.append(LeadRow(row["id"], row["source"], row["external_id"], values))
    return found


async def create_leads(
    session: AsyncSession, source: str, deliveries: Mapping[str, Sequence[LeadEvent]]
) -> dict[str, LeadRow]:
    """Insert leads not stored yet, each with the state its delivered events give it. A lead a
    concurrent delivery created first is left out (the caller locks and re-reads it)."""
    values = {
        external_id: lead_values(external_id, sort_and_dedupe(list(events)))
        for external_id, events in sorted(deliveries.items())  # sorted: no insert deadlocks
    }
    rows = [{"source": source, "external_id": ext, **v} for ext, v in values.items()]
    created: dict[str, LeadRow] = {}
    for part in chunks(rows):
        for pk, external_id in await insert_new(session, LEADS, part, ("id", "external_id")):
            created[external_id] = LeadRow(pk, source, external_id, values[external_id])
    return created


def lead_writes(leads: Iterable[LeadRow]) -> Write:
    """The updates of the leads a fold changed."""
    return Write(
        "update", LEADS, [{"id": lead.id, **lead.values} for lead in leads if lead.changed]
    )


def lead_values(
    external_id: str, history: Sequence[LeadEvent], states: Sequence[LeadState] | None = None
) -> dict[str, Any]:
    """The columns of a lead row, folded from its whole, ordered history (``states``: its
    ``lead_states``, when the caller has them already)."""
    states = states if states is not None else lead_states(history)
    state = states[-1] if states else LeadState(id=external_id)
    return {
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


@dataclass(frozen=True, slots=True)
class Appended:
    """What ``append_events`` stored and read back, for the leads asked for that changed."""

    inserted: set[str]  # ids of the events that were new to the log
    histories: dict[int, list[LeadEvent]]  # each lead's whole history
    cycles: CyclesByLead | None  # their cycles, locked (PostgreSQL; else None: not read)


VALUE_COLUMNS = tuple(lead_values("", []))


async def append_events(
    session: AsyncSession,
    source: str,
    events: Iterable[LeadEvent],
    lead_pks: Mapping[str, int],
    raw: tuple[Mapping[str, str], bytes] | None,
    now: datetime,
    histories_of: Collection[int],
) -> Appended:
    """Store the raw request and append the events (a redelivered event hits the unique key and
    is skipped), then read back the whole history of each lead in ``histories_of`` that gained
    an event."""
    events = list(events)
    rows: list[dict[str, Any]] = [
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
        return await _append_postgresql(session, source, events, rows, raw, now, histories_of)
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
    changed = {row["lead_id"] for row in rows if row["event_id"] in inserted}
    histories = await load_histories(session, sorted(changed.intersection(histories_of)))
    return Appended(inserted, histories, None)


# PostgreSQL: the raw request, every event, and the histories and cycles of the stored leads
# they extend, in one statement. The history part runs on the statement's snapshot, so it sees
# the log as it was before this delivery (the events just appended come back from RETURNING
# instead); the caller holds the leads' locks, so nothing else can have extended those
# histories since. The cycles are locked too, so that a breach the sweep is announcing right
# now is seen (and corrected if need be) rather than overwritten, in id order; lookups go
# through LATERAL subqueries for the reason ``bulk.keyed_select`` gives.
_EVENTS_FROM_ARRAYS = """
SELECT e.lead_id, :source, e.event_id, e.type, e.occurred_at, :received_at, CAST(e.data AS json),
       {raw_id}
FROM unnest(CAST(:lead_id AS bigint[]), CAST(:event_id AS varchar[]), CAST(:type AS varchar[]),
            CAST(:occurred_at AS timestamptz[]), CAST(:data AS text[]))
     AS e(lead_id, event_id, type, occurred_at, data)
"""
_APPEND_AND_READ_BACK = """
appended AS (
    INSERT INTO lead_events (lead_id, source, event_id, type, occurred_at, received_at, data,
                             raw_request_id)
    {select}
    ON CONFLICT (source, event_id) DO NOTHING
    RETURNING lead_id, event_id
),
extended AS MATERIALIZED (
    SELECT lead_id FROM unnest(CAST(:histories_of AS bigint[])) AS k(lead_id)
    WHERE lead_id IN (SELECT lead_id FROM appended)
),
found AS MATERIALIZED (
    SELECT c.id FROM extended AS k
    CROSS JOIN LATERAL (SELECT id FROM sla_cycles AS c WHERE c.lead_id = k.lead_id OFFSET 0) AS c
    ORDER BY c.id
),
locked AS (
    SELECT c.* FROM found AS f
    CROSS JOIN LATERAL (SELECT * FROM sla_cycles AS c WHERE c.id = f.id FOR UPDATE) AS c
)
SELECT lead_id, event_id, CAST(NULL AS json) AS data, CAST(NULL AS json) AS cycle
FROM appended
UNION ALL
SELECT e.lead_id, NULL, e.data, NULL
FROM extended AS k
CROSS JOIN LATERAL (SELECT * FROM lead_events AS e WHERE e.lead_id = k.lead_id OFFSET 0) AS e
UNION ALL
SELECT lead_id, NULL, NULL, row_to_json(locked) FROM locked
"""
_APPEND_WITH_RAW = text(
    "WITH raw AS (INSERT INTO raw_requests (source, received_at, headers, body) "
    "VALUES (:source, :received_at, CAST(:headers AS json), :body) RETURNING id), "
    + _APPEND_AND_READ_BACK.format(select=_EVENTS_FROM_ARRAYS.format(raw_id="(SELECT id FROM raw)"))
).columns(lead_id=BigInteger, event_id=String, data=JSON, cycle=JSON)
_APPEND = text(
    "WITH " + _APPEND_AND_READ_BACK.format(select=_EVENTS_FROM_ARRAYS.format(raw_id="NULL"))
).columns(lead_id=BigInteger, event_id=String, data=JSON, cycle=JSON)


async def _append_postgresql(
    session: AsyncSession,
    source: str,
    events: list[LeadEvent],
    rows: list[dict[str, Any]],
    raw: tuple[Mapping[str, str], bytes] | None,
    now: datetime,
    histories_of: Collection[int],
) -> Appended:
    arrays: dict[str, Any] = {
        name: [row[name] for row in rows] for name in ("lead_id", "event_id", "type", "occurred_at")
    }
    arrays["data"] = [json_codec.dumps(row["data"]) for row in rows]
    arrays.update(source=source, received_at=now, histories_of=list(histories_of))
    if raw is None:
        result = await session.execute(_APPEND, arrays)
    else:
        arrays.update(headers=json_codec.dumps(dict(raw[0])), body=raw[1])
        result = await session.execute(_APPEND_WITH_RAW, arrays)
    inserted: set[str] = set()
    stored: dict[int, list[LeadEvent]] = defaultdict(list)
    cycles: CyclesByLead = defaultdict(dict)
    for lead_pk, event_id, data, cycle_values in result:
        if event_id is not None:
            inserted.add(event_id)
        elif data is not None:
            stored[lead_pk].append(event_from_json(data))
        else:
            cycle = cycle_from_json(cycle_values)
            cycles[lead_pk][(cycle.policy_id, cycle.number)] = cycle
    wanted = set(histories_of)
    for event, row in zip(events, rows, strict=True):
        if event.event_id in inserted and row["lead_id"] in wanted:
            stored[row["lead_id"]].append(event)
    histories = {pk: sort_and_dedupe(history) for pk, history in stored.items()}
    return Appended(inserted, histories, cycles)


async def load_histories(
    session: AsyncSession, lead_pks: Sequence[int]
) -> dict[int, list[LeadEvent]]:
    """Each lead's events in application order."""
    histories: dict[int, list[LeadEvent]] = defaultdict(list)
    if is_postgresql(session):
        query = keyed_select(_EVENTS, "lead_id", ("lead_id", "data"))
    else:
        query = _HISTORIES
    for part in chunks(lead_pks):
        for lead_pk, data in await session.execute(query, {"keys": list(part)}):
            histories[lead_pk].append(event_from_json(data))
    return {pk: sort_and_dedupe(events) for pk, events in histories.items()}
