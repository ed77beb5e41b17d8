"""Canonical lead events and lead state: the vocabulary shared by CRM adapters, ingest and the core.

Every inbound source (the generic format, HubSpot, Pipedrive, ...) turns what it receives into
``LeadEvent`` values; the event log stores them; the SLA engine folds them into ``LeadState`` and
cycles. Nothing here knows about HTTP or databases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from operator import attrgetter
from typing import Any, Literal, TypeVar, dataclass_transform

EventType = Literal[
    "lead.created",
    "lead.status_changed",
    "lead.assigned",
    "lead.activity",
    "lead.updated",
    "lead.deleted",
]
EVENT_TYPES: tuple[str, ...] = (
    "lead.created",
    "lead.status_changed",
    "lead.assigned",
    "lead.activity",
    "lead.updated",
    "lead.deleted",
)

CANONICAL_STATUSES: tuple[str, ...] = (
    "new",
    "mql",
    "sal",
    "sql",
    "opportunity",
    "customer",
    "disqualified",
    "recycled",
    "unreachable",
)

# Lead fields a policy may match on or group reports by.
LEAD_FIELDS: tuple[str, ...] = (
    "status",
    "owner",
    "team",
    "email",
    "name",
    "source",
    "segment",
    "priority",
    "score",
    "country",
)


_Value = TypeVar("_Value")


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def value_type(cls: type[_Value]) -> type[_Value]:
    """A frozen dataclass to the type checker, which rejects any assignment to its fields; at
    run time a plain one with slots (and hashable, as frozen ones are). Events, lead states and
    cycle results are built per event and per policy on ingest's hot path, where a frozen
    dataclass's ``__init__`` (an ``object.__setattr__`` call per field) costs seven times as
    much: an eighth of a 100-event delivery's CPU."""
    return dataclass(slots=True, unsafe_hash=True)(cls)


@value_type
class LeadSnapshot:
    """The lead's fields as the sender knew them when the event happened.

    ``None`` means "not sent", never "cleared": a field is only overwritten by a value.
    ``source`` is the marketing source (webinar, ads, ...), not the CRM the event came from.
    """

    id: str
    status: str | None = None
    owner: str | None = None
    team: str | None = None
    email: str | None = None
    name: str | None = None
    source: str | None = None
    segment: str | None = None
    priority: str | None = None
    score: float | None = None
    country: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)


@value_type
class StatusChange:
    to: str
    from_: str | None = None
    reason: str | None = None


@value_type
class OwnerChange:
    to: str | None
    from_: str | None = None


@value_type
class Activity:
    kind: str  # call, email, whatsapp, meeting, ...
    outcome: str | None = None
    by: str | None = None


@value_type
class LeadEvent:
    """One thing that happened to a lead in the CRM.

    ``event_id`` is unique per source (the dedupe key). ``occurred_at`` is an aware UTC instant.
    ``self_originated`` marks changes lead-sla itself made in the CRM (recognised by the CRM's
    change-source field): they update state but never start a clock.
    """

    event_id: str
    type: EventType
    occurred_at: datetime
    lead: LeadSnapshot
    status: StatusChange | None = None
    owner: OwnerChange | None = None
    activity: Activity | None = None
    self_originated: bool = False

    @property
    def order_key(self) -> tuple[datetime, str]:
        """Events apply in ``occurred_at`` order; the id breaks ties so any arrival order folds
        to the same result."""
        return (self.occurred_at, self.event_id)


@value_type
class LeadState:
    """The lead as derived from its events, in ``occurred_at`` order."""

    id: str
    status: str | None = None
    owner: str | None = None
    team: str | None = None
    email: str | None = None
    name: str | None = None
    source: str | None = None
    segment: str | None = None
    priority: str | None = None
    score: float | None = None
    country: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    deleted: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def field(self, name: str) -> Any:
        """A lead field by name, falling back to ``attributes`` for custom fields."""
        if name in LEAD_FIELDS:
            return getattr(self, name)
        return self.attributes.get(name)


def apply_event(state: LeadState, event: LeadEvent) -> LeadState:
    """The lead after ``event``: snapshot fields overwrite, then the typed change wins."""
    snap = event.lead
    # Positional, read and built in one call each: a lead folds once per event per delivery.
    values = list(_state_values(state))
    for position, value in zip(_SNAPSHOT_POSITIONS, _snapshot_values(snap), strict=True):
        if value is not None:
            values[position] = value
    if snap.attributes:
        values[_AT["attributes"]] = {**state.attributes, **snap.attributes}
    if event.status is not None:
        values[_AT["status"]] = event.status.to
    if event.owner is not None:
        values[_AT["owner"]] = event.owner.to
    if event.type == "lead.deleted":
        values[_AT["deleted"]] = True
    if state.created_at is None:
        values[_AT["created_at"]] = event.occurred_at
    values[_AT["updated_at"]] = event.occurred_at
    return LeadState(*values)


_STATE_FIELDS = tuple(f.name for f in fields(LeadState))
_AT = {name: position for position, name in enumerate(_STATE_FIELDS)}
_SNAPSHOT_POSITIONS = tuple(_AT[name] for name in LEAD_FIELDS)
_state_values = attrgetter(*_STATE_FIELDS)
_snapshot_values = attrgetter(*LEAD_FIELDS)


def lead_states(events: Sequence[LeadEvent]) -> list[LeadState]:
    """The lead after each of its ordered events: folded once, then read by every policy."""
    states = []
    state = LeadState(id=events[0].lead.id if events else "")
    for event in events:
        state = apply_event(state, event)
        states.append(state)
    return states


def sort_and_dedupe(events: list[LeadEvent]) -> list[LeadEvent]:
    """Events in application order, each ``event_id`` once (the first stored copy wins)."""
    seen: dict[str, LeadEvent] = {}
    for event in events:
        seen.setdefault(event.event_id, event)
    return sorted(seen.values(), key=lambda e: e.order_key)
