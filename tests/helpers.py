"""Building and signing generic-format deliveries in tests."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import httpx

from service.crm import signatures
from tests.conftest import GENERIC_SECRET


def event(
    event_id: str,
    lead_id: str,
    at: datetime,
    type: str = "lead.status_changed",
    **parts: Any,
) -> dict[str, Any]:
    lead = {"id": lead_id, **parts.pop("lead", {})}
    return {
        "event_id": event_id,
        "type": type,
        "occurred_at": at.isoformat(),
        "lead": lead,
        **parts,
    }


def status(event_id: str, lead_id: str, at: datetime, to: str, **lead: Any) -> dict[str, Any]:
    return event(event_id, lead_id, at, "lead.status_changed", status={"to": to}, lead=lead)


def activity(event_id: str, lead_id: str, at: datetime, kind: str = "call") -> dict[str, Any]:
    return event(event_id, lead_id, at, "lead.activity", activity={"kind": kind})


def signed_headers(body: bytes, now: datetime, secret: str = GENERIC_SECRET,
                   message_id: str = "msg_1") -> dict[str, str]:  # fmt: skip
    timestamp = int(now.timestamp())
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signatures.sign(secret, message_id, timestamp, body),
    }


async def post_events(
    client: httpx.AsyncClient, now: datetime, *events: dict[str, Any], batch: bool = True
) -> httpx.Response:
    payload: Any = {"events": list(events)} if batch or len(events) != 1 else events[0]
    body = json.dumps(payload).encode()
    return await client.post("/webhooks/generic", content=body, headers=signed_headers(body, now))
