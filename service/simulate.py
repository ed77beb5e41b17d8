"""``lead-sla simulate``: realistic signed traffic for a running server.

Leads turn MQL at moments spread over the past few *business* hours of the server's first
``response`` policy (read from the same ``LEAD_SLA_POLICY_FILE``); most get a first call, some
quickly, some late, some never. Whatever the hour — a night, a weekend, a holiday — a fresh
server then shows met cycles, breaches and reminders within seconds of the next sweep.
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
from service.policies import load, policy_file_path
from service.policy_file import PolicyFileError
from service.sla.calendar import Calendar

TEAMS = ("emea", "latam", "na")
OWNERS = ("rep-1", "rep-2", "rep-3")
SOURCES = ("webinar", "ads", "organic", "referral", "event")
CALL_DELAYS_MINUTES = (5, 20, 45, 90, 150)  # business minutes after the MQL


def story_calendar(settings: Settings) -> tuple[Calendar, str]:
    """The calendar of the first ``response`` policy the server runs, and its name (24x7 if
    there is no such policy, or the file cannot be read from here)."""
    path = policy_file_path(settings.policy_file)
    try:
        loaded = load(path, settings.environment())
    except PolicyFileError as exc:
        print(f"lead-sla simulate: {exc}\nlead-sla simulate: using a 24x7 calendar",
              file=sys.stderr)  # fmt: skip
        return Calendar(), "24x7"
    name = next(
        (p.calendar.default for p in loaded.policy_set.policies if p.kind == "response"), None
    )
    return loaded.calendars(name), name or "24x7"


def business_time_before(calendar: Calendar, end: datetime, seconds: float) -> datetime:
    """The latest instant from which ``seconds`` of business time run until ``end``; ``end`` minus
    ``seconds`` of wall time if the calendar has not been open that long in the past year."""
    span = timedelta(seconds=seconds)
    while calendar.elapsed(end - span, end) < seconds:
        if span > timedelta(days=366):
            return end - timedelta(seconds=seconds)
        span *= 2
    early, late = end - span, end  # elapsed(early, end) >= seconds > elapsed(late, end)
    while late - early > timedelta(seconds=1):
        middle = early + (late - early) / 2
        if calendar.elapsed(middle, end) >= seconds:
            early = middle
        else:
            late = middle
    return early


def lead_story(
    rng: random.Random, lead_id: str, now: datetime, hours_back: float, calendar: Calendar
) -> list[dict[str, Any]]:
    """One lead's events: created, assigned, MQL ``0.2``–``hours_back`` business hours ago,
    maybe contacted, maybe accepted."""
    mql_at = business_time_before(calendar, now, rng.uniform(0.2, hours_back) * 3600)
    created = mql_at - timedelta(minutes=rng.uniform(1, 10))
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
        _event(lead_id, "mql", "lead.status_changed", mql_at, {"id": lead_id},
               status={"from": "new", "to": "mql", "reason": "score>=80"}),
    ]  # fmt: skip
    if rng.random() < 0.7:
        call_at = calendar.add(mql_at, rng.choice(CALL_DELAYS_MINUTES) * 60)
        if call_at < now:
            events.append(_event(lead_id, "call", "lead.activity", call_at, {"id": lead_id},
                                 activity={"kind": "call", "outcome": "connected",
                                           "by": lead["owner"]}))  # fmt: skip
            if rng.random() < 0.5 and call_at + timedelta(minutes=10) < now:
                events.append(_event(lead_id, "sal", "lead.status_changed",
                                     call_at + timedelta(minutes=10), {"id": lead_id},
                                     status={"from": "mql", "to": "sal"}))  # fmt: skip
    return events


def _event(lead_id: str, step: str, kind: str, at: datetime, lead: dict[str, Any],
           **parts: Any) -> dict[str, Any]:  # fmt: skip
    return {
        "event_id": f"{lead_id}-{step}",
        "type": kind,
        "occurred_at": at.isoformat(),
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
    calendar, calendar_name = story_calendar(settings)
    events = [
        event
        for i in range(leads)
        for event in lead_story(rng, f"SIM-{run}-{i}", now, hours_back, calendar)
    ]
    rng.shuffle(events)  # arrival order differs from occurrence order, as with real CRMs
    accepted = duplicates = 0
    url = base_url.rstrip("/") + "/webhooks/generic"
    with httpx.Client(timeout=30) as client:
        for start in range(0, len(events), 100):
            try:
                response = signed_post(client, url, secret, {"events": events[start : start + 100]})
            except httpx.HTTPError as exc:
                print(f"lead-sla simulate: {url}: {exc}", file=sys.stderr)
                return 1
            if response.status_code != 202:
                print(f"lead-sla simulate: {response.status_code} {response.text}", file=sys.stderr)
                return 1
            answer = response.json()
            accepted += answer["accepted"]
            duplicates += answer["duplicates"]
    print(f"sent {len(events)} events for {leads} leads (run {run}), MQLs over the past "
          f"{hours_back:g} business hours of calendar {calendar_name}: "
          f"{accepted} accepted, {duplicates} duplicates")  # fmt: skip
    return 0
