"""Close end to end: signed event-log webhooks through ``POST /webhooks/close``, the real database
and pipeline, the sweep and a loopback receiver.

Each request is one ``{"subscription_id", "event"}`` entry signed with the subscription's
``signature_key`` (``close-sig-hash`` = hex HMAC-SHA256 of ``close-sig-timestamp`` + body, keyed
with the hex-decoded key), as Close's verification example computes it. The policy file maps the
lead status "Interested" to mql and reads the owner from the ``cf_owner`` User custom field.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from service.clock import FrozenClock
from service.config import Settings
from tests.conftest import Receiver
from tests.e2e.test_crm_common import MIN, T0, TARGET, CrmSource, accepted, at, crm_settings

SOURCE = "close"  # the source the ``crm`` fixture speaks for

KEY = "058bfb6a3d8cfdc4da7c3be5901b16ae11da982b46a25fb2cd7016e97a140a1c"  # signature_key
USER = "user_N6KhMpzHRCYQHdn4gRNIFNN5JExnsrprKA6ekxM63XA"


def lead_status(label: str) -> dict[str, str]:
    """A lead status as Close sends it: its id and its label."""
    return {"status_id": "stat_" + label.replace(" ", "").ljust(43, "0"), "status_label": label}


POTENTIAL, INTERESTED = lead_status("Potential"), lead_status("Interested")


@pytest.fixture
def settings(database_url: str, receiver: Receiver) -> Settings:
    return crm_settings(database_url, receiver, {SOURCE: KEY})


def lead_id(n: int) -> str:
    return f"lead_{n:04d}EFwzPyfCErS8uQ77is2wFLvr9BgVi6cTfbFM68"


def close_event(
    event_id: str, object_type: str, action: str, lead: str, when: datetime,
    data: dict[str, Any], previous: dict[str, Any] | None = None, **extra: Any,
) -> dict[str, Any]:  # fmt: skip
    """An event-log entry as Close posts it; dates without an offset, in UTC."""
    stamp = when.replace(tzinfo=None).isoformat(timespec="microseconds")
    event: dict[str, Any] = {
        "id": event_id, "date_created": stamp, "date_updated": stamp,
        "organization_id": "orga_XbVPx5fFbKlYTz9PW5Ih1XDhViV10YihIaEgMEb6fVW", "user_id": USER,
        "request_id": f"req_{event_id}", "api_key_id": None, "oauth_client_id": None,
        "oauth_scope": None, "object_type": object_type, "object_id": data.get("id"),
        "lead_id": lead, "action": action, "changed_fields": sorted(previous or {}),
        "meta": {"request_path": "/api/v1/lead/", "request_method": "PUT"}, "data": data,
        "previous_data": previous or {}, **extra,
    }  # fmt: skip
    return {"subscription_id": "whsub_1zwvQVQOBPFqrH6xXJEvFJ", "event": event}


def lead_data(lead: str, status: dict[str, str]) -> dict[str, Any]:
    return {"id": lead, "display_name": "Lowell Bast", "name": "Lowell Bast", "contact_ids": [],
            "custom.cf_owner": USER, **status}  # fmt: skip


def created(event_id: str, lead: str, when: datetime) -> dict[str, Any]:
    return close_event(event_id, "lead", "created", lead, when, lead_data(lead, POTENTIAL))


def status_changed(
    event_id: str, lead: str, when: datetime, to: dict[str, str], was: dict[str, str]
) -> dict[str, Any]:
    return close_event(event_id, "lead", "updated", lead, when, lead_data(lead, to), was)


def call(event_id: str, lead: str, when: datetime, direction: str = "outbound") -> dict[str, Any]:
    data = {"id": f"acti_{event_id}", "lead_id": lead, "user_id": USER, "direction": direction,
            "disposition": "answered", "duration": 184, "status": "completed"}  # fmt: skip
    return close_event(event_id, "activity.call", "created", lead, when, data)


def sign(key: str, timestamp: str, body: bytes) -> str:
    """Close's verification example."""
    data = timestamp + body.decode()
    return hmac.new(bytearray.fromhex(key), data.encode("utf-8"), hashlib.sha256).hexdigest()


async def deliver(
    client: httpx.AsyncClient, clock: FrozenClock, body: dict[str, Any], *, key: str = KEY,
    age: timedelta = timedelta(0), signature: str | None = None,
) -> httpx.Response:  # fmt: skip
    raw = json.dumps(body).encode()
    timestamp = str(int((clock.now() - age).timestamp()))
    headers = {
        "content-type": "application/json",
        "close-sig-hash": signature if signature is not None else sign(key, timestamp, raw),
        "close-sig-timestamp": timestamp,
    }
    return await client.post("/webhooks/close", content=raw, headers=headers)


async def test_interested_starts_an_outbound_call_stops_and_an_untouched_lead_breaches_once(
    crm: CrmSource, client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    start = T0 - 10 * MIN
    touched_lead, untouched_lead = lead_id(1), lead_id(2)
    for n, lead in enumerate((touched_lead, untouched_lead)):
        accepted(await deliver(client, clock, created(f"ev_c{n}", lead, start - 5 * MIN)), 1)
        mql = status_changed(f"ev_s{n}", lead, start, INTERESTED, POTENTIAL)
        accepted(await deliver(client, clock, mql), 1)
    for lead in (touched_lead, untouched_lead):
        await crm.assert_running(lead, since=start)
    detail = await crm.lead(touched_lead)
    assert (detail["lead"]["status"], detail["lead"]["owner"]) == ("mql", USER)

    accepted(await deliver(client, clock, call("ev_call1", touched_lead, T0 - 2 * MIN)), 1)
    touched = await crm.first_touch(touched_lead)
    assert (touched["state"], touched["open"]) == ("met", False)
    assert at(touched["stopped_at"]) == T0 - 2 * MIN
    assert touched["stop_reason"] == "activity: call"
    timeline = (await crm.lead(touched_lead))["timeline"]
    assert timeline[-1]["data"]["activity"] == {"kind": "call", "outcome": "connected", "by": USER}

    await crm.assert_breach_sent(untouched_lead, owner=USER, due_at=start + TARGET)
    await crm.assert_not_sent_again()


async def test_retried_events_change_nothing(
    crm: CrmSource, client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    met, running = lead_id(10), lead_id(11)
    sent = [
        created("ev_r1", met, T0 - 40 * MIN),
        status_changed("ev_r2", met, T0 - 30 * MIN, INTERESTED, POTENTIAL),
        call("ev_r3", met, T0 - 20 * MIN),
        status_changed("ev_r4", running, T0 - 30 * MIN, INTERESTED, POTENTIAL),
    ]
    for body in sent:
        accepted(await deliver(client, clock, body), 1)
    before = await crm.snapshot(met, running)
    assert before["leads"][met]["cycles"][0]["state"] == "met"

    clock.advance(minutes=2)  # Close retries the same event later, signed anew
    for body in sent:
        accepted(await deliver(client, clock, body), 0, duplicates=1)
    assert await crm.snapshot(met, running) == before


async def test_events_arriving_in_reverse_give_the_cycle_of_in_order_arrival(
    crm: CrmSource, client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    def history(lead: str) -> list[dict[str, Any]]:
        return [
            created(f"ev_{lead[5:9]}_1", lead, T0 - 40 * MIN),
            status_changed(f"ev_{lead[5:9]}_2", lead, T0 - 30 * MIN, INTERESTED, POTENTIAL),
            call(f"ev_{lead[5:9]}_3", lead, T0 - 10 * MIN),
        ]

    in_order, reversed_ = lead_id(20), lead_id(21)
    for body in history(in_order):
        accepted(await deliver(client, clock, body), 1)
    for body in history(reversed_)[::-1]:
        accepted(await deliver(client, clock, body), 1)
    await crm.assert_met_alike(
        in_order, reversed_, started_at=T0 - 30 * MIN, stopped_at=T0 - 10 * MIN,
        stop_reason="activity: call", status="mql",
    )  # fmt: skip


async def test_bad_signature_is_refused_and_nothing_is_stored(
    crm: CrmSource, client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    body = status_changed("ev_bad", lead_id(30), T0 - MIN, INTERESTED, POTENTIAL)
    raw = json.dumps(body).encode()
    timestamp = str(int(clock.now().timestamp()))
    text_keyed = hmac.new(KEY.encode(), timestamp.encode() + raw, hashlib.sha256).hexdigest()
    forgeries: dict[str, dict[str, Any]] = {
        "another key": {"key": "1" * 64},
        "keyed with the hex text": {"signature": text_keyed},
        "timestamp 6 minutes old": {"age": timedelta(minutes=6)},
        "no signature": {"signature": ""},
    }
    for forgery, options in forgeries.items():
        response = await deliver(client, clock, body, **options)
        assert response.status_code == 401, (forgery, response.text)
    await crm.assert_nothing_stored()


async def test_events_it_does_not_use_are_acknowledged_counted_and_kept(
    crm: CrmSource, client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    lead = lead_id(40)
    draft = {"id": "acti_draft", "lead_id": lead, "user_id": USER, "direction": "outgoing",
             "status": "draft", "subject": "Hello"}  # fmt: skip
    note = {"id": "acti_note", "lead_id": lead, "user_id": USER, "note": "Called the office"}
    unused = [
        call("ev_in", lead, T0, direction="inbound"),  # the lead calling in is not sales effort
        close_event("ev_draft", "activity.email", "created", lead, T0, draft),
        close_event("ev_note", "activity.note", "created", lead, T0, note),
        close_event(
            "ev_desc", "lead", "updated", lead, T0, lead_data(lead, POTENTIAL), {"description": ""}
        ),
        close_event("ev_cont", "contact", "created", lead, T0, {"id": "cont_1", "lead_id": lead}),
    ]
    await crm.assert_ignored_and_kept(unused, lambda body: deliver(client, clock, body))


async def test_unmapped_status_is_kept_as_sent(
    crm: CrmSource, client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    lead = lead_id(50)
    follow_up = lead_status("Follow Up")  # an organisation's own status, not in the map
    mql = status_changed("ev_u1", lead, T0 - 20 * MIN, INTERESTED, POTENTIAL)
    accepted(await deliver(client, clock, mql), 1)
    later = status_changed("ev_u2", lead, T0 - 10 * MIN, follow_up, INTERESTED)
    accepted(await deliver(client, clock, later), 1)
    detail = await crm.lead(lead)
    assert detail["lead"]["status"] == "Follow Up"
    last = detail["timeline"][-1]
    assert last["type"] == "lead.status_changed"
    assert (last["data"]["status"]["from"], last["data"]["status"]["to"]) == ("mql", "Follow Up")
    assert (await crm.first_touch(lead))["state"] == "running"
