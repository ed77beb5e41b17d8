"""Canonical events <-> the JSON kept in the event log."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from service.sla.types import (
    LEAD_FIELDS,
    Activity,
    EventType,
    LeadEvent,
    LeadSnapshot,
    OwnerChange,
    StatusChange,
)


def event_to_json(event: LeadEvent) -> dict[str, Any]:
    lead: dict[str, Any] = {"id": event.lead.id}
    for name in LEAD_FIELDS:
        value = getattr(event.lead, name)
        if value is not None:
            lead[name] = value
    if event.lead.attributes:
        lead["attributes"] = dict(event.lead.attributes)
    data: dict[str, Any] = {
        "event_id": event.event_id,
        "type": event.type,
        "occurred_at": event.occurred_at.isoformat(),
        "lead": lead,
    }
    if event.status is not None:
        data["status"] = {"from": event.status.from_, "to": event.status.to,
                          "reason": event.status.reason}  # fmt: skip
    if event.owner is not None:
        data["owner"] = {"from": event.owner.from_, "to": event.owner.to}
    if event.activity is not None:
        data["activity"] = {"kind": event.activity.kind, "outcome": event.activity.outcome,
                            "by": event.activity.by}  # fmt: skip
    if event.self_originated:
        data["self_originated"] = True
    return data


def event_from_json(data: dict[str, Any]) -> LeadEvent:
    lead = data["lead"]
    status = data.get("status")
    owner = data.get("owner")
    activity = data.get("activity")
    return LeadEvent(
        event_id=data["event_id"],
        type=cast(EventType, data["type"]),
        occurred_at=datetime.fromisoformat(data["occurred_at"]),
        lead=LeadSnapshot(
            id=lead["id"],
            attributes=lead.get("attributes") or {},
            **{name: lead.get(name) for name in LEAD_FIELDS},
        ),
        status=StatusChange(to=status["to"], from_=status.get("from"), reason=status.get("reason"))
        if status
        else None,
        owner=OwnerChange(to=owner.get("to"), from_=owner.get("from")) if owner else None,
        activity=Activity(
            kind=activity["kind"], outcome=activity.get("outcome"), by=activity.get("by")
        )
        if activity
        else None,
        self_originated=bool(data.get("self_originated", False)),
    )
