"""HubSpot end to end: signed contact notifications through ``POST /webhooks/hubspot``, the real
database and pipeline, the sweep and a loopback receiver.

Bodies are JSON arrays of Webhooks API notifications; each request carries the signature v3 that
HubSpot computes over method, the URL it calls (``LEAD_SLA_PUBLIC_URL`` + path), body and
timestamp, computed here as HubSpot's documentation describes it.
"""

from __future__ import annotations

import base64
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

SOURCE = "hubspot"  # the source the ``crm`` fixture speaks for

SECRET = "3f0c2a9e-7d41-4b8e-9a51-6c2f8e0d1b7a"  # the app's client secret
PUBLIC_URL = "https://sla.example.com"
PATH = "/webhooks/hubspot"
PORTAL = 62515
OWNER = "8675309"


@pytest.fixture
def settings(database_url: str, receiver: Receiver) -> Settings:
    return crm_settings(database_url, receiver, {SOURCE: SECRET}, public_url=PUBLIC_URL)


def notification(
    event_id: int, contact: int, when: datetime, name: str | None = None, value: str | None = None,
    subscription: str = "contact.propertyChange", **extra: Any,
) -> dict[str, Any]:  # fmt: skip
    """One notification as HubSpot posts it."""
    body: dict[str, Any] = {
        "eventId": event_id,
        "subscriptionId": 1234,
        "portalId": PORTAL,
        "appId": 54321,
        "occurredAt": int(when.timestamp() * 1000),
        "subscriptionType": subscription,
        "attemptNumber": 0,
        "objectId": contact,
        "changeSource": "CRM",
        "sourceId": "userId:12345",
    }
    if name is not None:
        body["propertyName"], body["propertyValue"] = name, value
    return {**body, **extra}


def lifecycle(event_id: int, contact: int, when: datetime, stage: str) -> dict[str, Any]:
    return notification(event_id, contact, when, "lifecyclestage", stage)


def lead_status(event_id: int, contact: int, when: datetime, value: str) -> dict[str, Any]:
    return notification(event_id, contact, when, "hs_lead_status", value)


def owner(event_id: int, contact: int, when: datetime) -> dict[str, Any]:
    return notification(event_id, contact, when, "hubspot_owner_id", OWNER)


def sign(secret: str, uri: str, body: bytes, timestamp: str) -> str:
    message = b"POST" + uri.encode() + body + timestamp.encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


async def deliver(
    client: httpx.AsyncClient, clock: FrozenClock, notifications: list[dict[str, Any]], *,
    secret: str = SECRET, signed_url: str = PUBLIC_URL + PATH, age: timedelta = timedelta(0),
    headers: dict[str, str] | None = None,
) -> httpx.Response:  # fmt: skip
    body = json.dumps(notifications).encode()
    timestamp = str(int((clock.now() - age).timestamp() * 1000))
    sent = {
        "content-type": "application/json",
        "x-hubspot-signature-v3": sign(secret, signed_url, body, timestamp),
        "x-hubspot-request-timestamp": timestamp,
        "x-hubspot-signature-version": "v1",
        "user-agent": "HubSpot Connect 2.0 (http://dev.hubspot.com/)",
    }
    return await client.post(PATH, content=body, headers=sent if headers is None else headers)


async def test_mql_starts_an_attempt_stops_and_an_untouched_contact_breaches_once(
    crm: CrmSource, client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    start = T0 - 10 * MIN
    batch = [
        owner(1, 101, start - MIN), lifecycle(2, 101, start, "marketingqualifiedlead"),
        owner(3, 202, start - MIN), lifecycle(4, 202, start, "marketingqualifiedlead"),
    ]  # fmt: skip
    accepted(await deliver(client, clock, batch), 4)
    for contact in ("101", "202"):
        await crm.assert_running(contact, since=start)
    detail = await crm.lead("101")
    assert (detail["lead"]["status"], detail["lead"]["owner"]) == ("mql", OWNER)

    # The rep tries to reach 101: HubSpot reports it as hs_lead_status ATTEMPTED_TO_CONTACT.
    attempt = lead_status(5, 101, T0 - 2 * MIN, "ATTEMPTED_TO_CONTACT")
    accepted(await deliver(client, clock, [attempt]), 1)
    touched = await crm.first_touch("101")
    assert (touched["state"], touched["open"]) == ("met", False)
    assert at(touched["stopped_at"]) == T0 - 2 * MIN
    assert touched["stop_reason"] == "activity: attempt"
    assert (await crm.lead("101"))["lead"]["status"] == "mql"
    assert (await crm.first_touch("202"))["state"] == "running"

    await crm.assert_breach_sent("202", owner=OWNER, due_at=start + TARGET)
    assert (await crm.first_touch("202"))["state"] == "breached"
    await crm.assert_not_sent_again()


async def test_retried_batch_with_the_next_attempt_number_changes_nothing(
    crm: CrmSource, client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    batch = [
        owner(11, 301, T0 - 30 * MIN), lifecycle(12, 301, T0 - 20 * MIN, "marketingqualifiedlead"),
        lead_status(13, 301, T0 - 5 * MIN, "CONNECTED"),
        lifecycle(14, 302, T0 - 20 * MIN, "marketingqualifiedlead"),
    ]  # fmt: skip
    accepted(await deliver(client, clock, batch), 4)
    before = await crm.snapshot("301", "302")
    assert before["leads"]["301"]["cycles"][0]["state"] == "met"

    clock.advance(minutes=1)  # HubSpot retries later, counting the attempt up
    retry = [{**n, "attemptNumber": 1} for n in batch]
    accepted(await deliver(client, clock, retry), 0, duplicates=4)
    assert await crm.snapshot("301", "302") == before
    assert len(await crm.raw_requests()) == 2  # both kept as received


async def test_batch_out_of_order_gives_the_cycle_of_the_batch_in_order(
    crm: CrmSource, client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    def history(contact: int, first_id: int) -> list[dict[str, Any]]:
        return [
            lifecycle(first_id, contact, T0 - 40 * MIN, "lead"),
            lifecycle(first_id + 1, contact, T0 - 30 * MIN, "marketingqualifiedlead"),
            lead_status(first_id + 2, contact, T0 - 10 * MIN, "IN_PROGRESS"),
        ]

    in_order, shuffled = history(401, 21), history(402, 31)
    # HubSpot batches carry no order: the latest change arrives first, the oldest last.
    accepted(await deliver(client, clock, in_order + shuffled[::-1]), 6)
    await crm.assert_met_alike(
        "401", "402", started_at=T0 - 30 * MIN, stopped_at=T0 - 10 * MIN,
        stop_reason="status: sal", status="sal",
    )  # fmt: skip


async def test_bad_signature_is_refused_and_nothing_is_stored(
    crm: CrmSource, client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    batch = [lifecycle(41, 501, T0 - MIN, "marketingqualifiedlead")]
    forgeries: dict[str, dict[str, Any]] = {
        "another secret": {"secret": "not-the-client-secret"},
        "signed for the internal URL": {"signed_url": "http://testserver" + PATH},
        "timestamp 6 minutes old": {"age": timedelta(minutes=6)},
        "unsigned": {"headers": {"content-type": "application/json"}},
    }
    for forgery, options in forgeries.items():
        response = await deliver(client, clock, batch, **options)
        assert response.status_code == 401, (forgery, response.text)
        assert response.json()["error"].startswith("unauthorized"), forgery
    await crm.assert_nothing_stored()


async def test_notifications_it_does_not_use_are_acknowledged_counted_and_kept(
    crm: CrmSource, client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    unused = [
        notification(51, 601, T0, "phone", "+55 11 5555-0100"),  # a property not subscribed to
        notification(52, 9001, T0, "industry", "SOFTWARE", subscription="company.propertyChange"),
        notification(53, 9002, T0, subscription="deal.creation"),
        notification(54, 9003, T0, subscription="object.creation", objectTypeId="0-3"),  # a deal
        notification(55, 601, T0, subscription="contact.merge"),
    ]
    before = crm.ignored()
    response = await deliver(client, clock, unused)
    accepted(response, 0)
    assert crm.ignored() - before == 5
    (raw,) = await crm.raw_requests()
    assert raw.body == response.request.content
    assert raw.headers["content-type"] == "application/json"
    assert await crm.leads() == []


async def test_unmapped_lifecycle_stage_is_kept_as_sent(
    crm: CrmSource, client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    custom_stage = "1034567"  # a portal's own lifecycle stage, by its internal id
    batch = [
        lifecycle(61, 701, T0 - 20 * MIN, "marketingqualifiedlead"),
        lifecycle(62, 701, T0 - 10 * MIN, custom_stage),
    ]
    accepted(await deliver(client, clock, batch), 2)
    detail = await crm.lead("701")
    assert detail["lead"]["status"] == custom_stage
    assert detail["lead"]["attributes"]["lifecyclestage"] == custom_stage
    last = detail["timeline"][-1]
    assert last["type"] == "lead.status_changed"
    assert last["data"]["status"]["to"] == custom_stage
    # Not a stop status: the first-touch clock keeps running.
    assert (await crm.first_touch("701"))["state"] == "running"
