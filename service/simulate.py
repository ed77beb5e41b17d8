"""``lead-sla simulate``: realistic signed traffic for a running server.

Leads are created and turned MQL at moments spread over the past few hours; most get a first
call, some quickly, some late, some never — so a fresh server shows met cycles, breaches and
reminders within seconds of the next sweep.
"""

from __future__ import annotations

import json
import random
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from service.config import Settings
from service.crm import signatures

TEAMS = ("emea", "latam", "na")
OWNERS = ("rep-1", "rep-2", "rep-3")
SOURCES = ("webinar", "ads", "organic", "referral", "event")


def lead_story(
    rng: random.Random, lead_id: str, now: datetime, hours_back: float
) -> list[dict[str, Any]]:
    """One lead's events: created, assigned, MQL, maybe contacted, maybe accepted."""
    created = now - timedelta(hours=rng.uniform(0.2, hours_back))
    lead = {
        "id": lead_id,
        "team": rng.choice(TEAMS),
        "owner": rng.choice(OWNERS),
        "source": rng.choice(SOURCES),
        "priority": rng.choice(("high", "normal", "normal", "low")),
        "email": f"{lead_id.lower()}@example.com",
        "country": "BR",
    }
    events = [
        _event(lead_id, "created", "lead.created", created, lead, status={"to": "new"}),
        _event(lead_id, "mql", "lead.status_changed",
               created + timedelta(minutes=rng.uniform(1, 10)), {"id": lead_id},
               status={"from": "new", "to": "mql", "reason": "score>=80"}),
    ]  # fmt: skip
    mql_at = events[-1]["occurred_at_dt"]
    if rng.random() < 0.7:
        call_at = mql_at + timedelta(minutes=rng.choice((5, 20, 45, 90, 150)))
        if call_at < now:
            events.append(_event(lead_id, "call", "lead.activity", call_at, {"id": lead_id},
                                 activity={"kind": "call", "outcome": "connected",
                                           "by": lead["owner"]}))  # fmt: skip
            if rng.random() < 0.5 and call_at + timedelta(minutes=10) < now:
                events.append(_event(lead_id, "sal", "lead.status_changed",
                                     call_at + timedelta(minutes=10), {"id": lead_id},
                                     status={"from": "mql", "to": "sal"}))  # fmt: skip
    for event in events:
        event.pop("occurred_at_dt")
    return events


def _event(lead_id: str, step: str, kind: str, at: datetime, lead: dict[str, Any],
           **parts: Any) -> dict[str, Any]:  # fmt: skip
    return {
        "event_id": f"{lead_id}-{step}",
        "type": kind,
        "occurred_at": at.isoformat(),
        "occurred_at_dt": at,
        "lead": lead,
        **parts,
    }


def signed_post(client: httpx.Client, url: str, secret: str, payload: Any) -> httpx.Response:
    body = json.dumps(payload).encode()
    message_id = f"msg_{uuid.uuid4().hex}"
    timestamp = int(datetime.now(UTC).timestamp())
    headers = {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signatures.sign(secret, message_id, timestamp, body),
    }
    return client.post(url, content=body, headers=headers)


def run_simulation(
    settings: Settings, base_url: str, leads: int, seed: int | None, hours_back: float
) -> int:
    secret = settings.webhook_secret("generic")
    if not secret:
        print("lead-sla simulate: set LEAD_SLA_WEBHOOK_SECRET_GENERIC (the server's too)",
              file=sys.stderr)  # fmt: skip
        return 2
    rng = random.Random(seed)
    run = uuid.uuid4().hex[:6].upper()
    now = datetime.now(UTC)
    events = [e for i in range(leads) for e in lead_story(rng, f"SIM-{run}-{i}", now, hours_back)]
    rng.shuffle(events)  # arrival order differs from occurrence order, as with real CRMs
    accepted = duplicates = 0
    url = base_url.rstrip("/") + "/webhooks/generic"
    with httpx.Client(timeout=30) as client:
        for start in range(0, len(events), 100):
            response = signed_post(client, url, secret, {"events": events[start : start + 100]})
            if response.status_code != 202:
                print(f"lead-sla simulate: {response.status_code} {response.text}", file=sys.stderr)
                return 1
            answer = response.json()
            accepted += answer["accepted"]
            duplicates += answer["duplicates"]
    print(f"sent {len(events)} events for {leads} leads (run {run}): "
          f"{accepted} accepted, {duplicates} duplicates")  # fmt: skip
    return 0
