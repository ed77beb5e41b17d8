"""Response shapes of the REST API (they make the OpenAPI document at /docs)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from service.cycle_rows import pause_from_json
from service.models import Cycle, Lead, LeadEventRow
from service.sla.engine import CalendarLookup, elapsed_so_far


class LeadOut(BaseModel):
    source: str
    id: str
    status: str | None
    owner: str | None
    team: str | None
    email: str | None
    name: str | None
    lead_source: str | None
    segment: str | None
    priority: str | None
    score: float | None
    country: str | None
    attributes: dict[str, Any]
    deleted: bool
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def of(cls, lead: Lead) -> LeadOut:
        return cls(
            source=lead.source, id=lead.external_id, status=lead.status, owner=lead.owner,
            team=lead.team, email=lead.email, name=lead.name, lead_source=lead.lead_source,
            segment=lead.segment, priority=lead.priority, score=lead.score, country=lead.country,
            attributes=lead.attributes or {}, deleted=lead.deleted, created_at=lead.created_at,
            updated_at=lead.updated_at,
        )  # fmt: skip


class CycleOut(BaseModel):
    policy: str
    cycle: int
    kind: str
    policy_version: str
    state: str
    open: bool
    at_risk: bool
    owner: str | None
    team: str | None
    started_at: datetime
    due_at: datetime | None
    stopped_at: datetime | None
    breached_at: datetime | None
    late_by_seconds: float | None
    target_business_seconds: int | None
    elapsed_business_seconds: float | None = Field(
        description="business time counted: up to its stop, or up to this answer while it is open"
    )
    attempts: int | None
    required: int | None
    stop_reason: str | None
    pauses: list[dict[str, Any]]
    next_fire_at: datetime | None
    fired: list[str]
    lead: dict[str, str] | None = None

    @classmethod
    def of(
        cls, cycle: Cycle, now: datetime, calendars: CalendarLookup, lead: Lead | None = None
    ) -> CycleOut:
        """The cycle as of ``now``: an open cycle's elapsed time is counted up to it."""
        details = cycle.details or {}
        late = None
        if cycle.breached_at is not None and cycle.stopped_at is not None:
            late = (cycle.stopped_at - cycle.breached_at).total_seconds()
        return cls(
            policy=cycle.policy_id, cycle=cycle.number, kind=cycle.kind,
            policy_version=cycle.policy_version, state=cycle.state, open=cycle.open,
            at_risk=cycle.at_risk, owner=cycle.owner, team=cycle.team,
            started_at=cycle.started_at, due_at=cycle.due_at, stopped_at=cycle.stopped_at,
            breached_at=cycle.breached_at, late_by_seconds=late,
            target_business_seconds=cycle.target_seconds,
            elapsed_business_seconds=_elapsed(cycle, details, now, calendars),
            attempts=cycle.attempts,
            required=details.get("required"), stop_reason=details.get("stop_reason"),
            pauses=details.get("pauses", []), next_fire_at=cycle.next_fire_at,
            fired=list(cycle.fired or []),
            lead={"source": lead.source, "id": lead.external_id} if lead else None,
        )  # fmt: skip


def _elapsed(
    cycle: Cycle, details: dict[str, Any], now: datetime, calendars: CalendarLookup
) -> float | None:
    """A stopped cycle's stored figure; an open one's, counted again up to ``now`` (the stored
    one is as of the cycle's last change)."""
    if cycle.stopped_at is not None:
        return cycle.elapsed_business_seconds
    try:
        calendar = calendars(details.get("calendar"))
    except KeyError:  # a calendar a policy reload removed: the last figure known
        return cycle.elapsed_business_seconds
    pauses = [pause_from_json(pause) for pause in details.get("pauses", [])]
    return elapsed_so_far(cycle.started_at, pauses, calendar, now)


class EventOut(BaseModel):
    event_id: str
    type: str
    occurred_at: datetime
    received_at: datetime
    data: dict[str, Any]

    @classmethod
    def of(cls, row: LeadEventRow) -> EventOut:
        return cls(event_id=row.event_id, type=row.type, occurred_at=row.occurred_at,
                   received_at=row.received_at, data=row.data)  # fmt: skip


class LeadPage(BaseModel):
    items: list[LeadOut]
    next_cursor: str | None


class LeadDetail(BaseModel):
    lead: LeadOut
    timeline: list[EventOut]
    cycles: list[CycleOut]


class CyclePage(BaseModel):
    items: list[CycleOut]
    next_cursor: str | None
