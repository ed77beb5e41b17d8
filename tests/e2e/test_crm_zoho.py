"""Zoho CRM end to end: workflow-rule webhooks through ``POST /webhooks/zoho``, the real database
and pipeline, the sweep and a loopback receiver.

Zoho posts one Lead per request as Form-Data (``application/x-www-form-urlencoded``) with the
merge fields the admin picked, under lead-sla's default parameter names, and the shared key in
the ``zoho-webhook-token`` header. Date-times come with the org's offset (-03:00). The standard
``Lead_Status`` picklist maps "Not Contacted" to mql and "Contacted" to sal plus a connected
call. A JSON list of records, as a Deluge function posts it, is accepted too.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

import httpx
import pytest

from service.clock import FrozenClock
from service.config import Settings
from tests.conftest import Receiver
from tests.e2e.test_crm_common import MIN, T0, TARGET, CrmSource, accepted, at, crm_settings

SOURCE = "zoho"  # the source the ``crm`` fixture speaks for

SECRET = "b7e4c0d9a1f2e3d4c5b6a7980f1e2d3c"
OWNER = "4876876000000225013"
SAO_PAULO = timezone(timedelta(hours=-3))
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def settings(database_url: str, receiver: Receiver) -> Settings:
    return crm_settings(database_url, receiver, {SOURCE: SECRET})


def lead_id(n: int) -> str:
    return f"48768760000006{n:05d}"


def record(lead: str, status: str, modified: datetime, **extra: str) -> dict[str, str]:
    """The merge fields of one Leads record under lead-sla's default parameter names."""
    return {
        "lead_id": lead, "lead_status": status, "owner_id": OWNER, "email": "ana@example.com",
        "first_name": "Ana", "last_name": "Souza", "lead_source": "Web Download",
        "country": "Brazil", "modified_time": modified.astimezone(SAO_PAULO).isoformat(),
        "created_time": (T0 - timedelta(days=3)).astimezone(SAO_PAULO).isoformat(),
        "modified_by": "4876876000000225099", "Company": "Acme", **extra,
    }  # fmt: skip


async def deliver(
    client: httpx.AsyncClient, body: dict[str, str] | list[dict[str, str]],
    token: str | None = SECRET,
) -> httpx.Response:  # fmt: skip
    """Form-Data for one record, raw JSON for a list; the key in the header."""
    if isinstance(body, dict):
        content, content_type = urlencode(body).encode(), FORM
    else:
        content, content_type = json.dumps(body).encode(), "application/json"
    headers = {"content-type": content_type, "user-agent": "ZohoCRM"}
    if token is not None:
        headers["zoho-webhook-token"] = token
    return await client.post("/webhooks/zoho", content=content, headers=headers)


async def test_not_contacted_starts_contacted_stops_and_an_untouched_lead_breaches_once(
    crm: CrmSource, client: httpx.AsyncClient
) -> None:
    start = T0 - 10 * MIN
    touched_lead, untouched_lead = lead_id(1), lead_id(2)
    for lead in (touched_lead, untouched_lead):
        accepted(await deliver(client, record(lead, "Not Contacted", start)), 2)  # status, owner
    for lead in (touched_lead, untouched_lead):
        await crm.assert_running(lead, since=start)
    detail = await crm.lead(touched_lead)
    assert (detail["lead"]["status"], detail["lead"]["owner"]) == ("mql", OWNER)
    assert detail["lead"]["attributes"]["crm_status"] == "Not Contacted"

    # status, owner, and the call the status records
    accepted(await deliver(client, record(touched_lead, "Contacted", T0 - 2 * MIN)), 3)
    touched = await crm.first_touch(touched_lead)
    assert (touched["state"], touched["open"]) == ("met", False)
    assert at(touched["stopped_at"]) == T0 - 2 * MIN
    timeline = (await crm.lead(touched_lead))["timeline"]
    calls = [e["data"]["activity"] for e in timeline if e["type"] == "lead.activity"]
    assert calls == [{"kind": "call", "outcome": "connected", "by": OWNER}]

    await crm.assert_breach_sent(untouched_lead, owner=OWNER, due_at=start + TARGET)
    await crm.assert_not_sent_again()


async def test_resent_requests_change_nothing(
    crm: CrmSource, client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    met, running = lead_id(10), lead_id(11)
    sent = [
        (record(met, "Not Contacted", T0 - 30 * MIN), 2),
        (record(met, "Attempted to Contact", T0 - 20 * MIN), 3),
        (record(running, "Not Contacted", T0 - 30 * MIN), 2),
    ]
    for body, count in sent:
        accepted(await deliver(client, body), count)
    before = await crm.snapshot(met, running)
    assert before["leads"][met]["cycles"][0]["state"] == "met"

    clock.advance(minutes=1)  # the same edit sent again (a retry, or a second rule firing)
    for body, count in sent:
        accepted(await deliver(client, body), 0, duplicates=count)
    assert await crm.snapshot(met, running) == before


async def test_records_out_of_order_give_the_cycle_of_the_records_in_order(
    crm: CrmSource, client: httpx.AsyncClient
) -> None:
    def history(lead: str) -> list[dict[str, str]]:
        return [
            record(lead, "Not Contacted", T0 - 30 * MIN),
            record(lead, "Contacted", T0 - 10 * MIN),
        ]

    in_order, reversed_ = lead_id(20), lead_id(21)
    accepted(await deliver(client, history(in_order) + history(reversed_)[::-1]), 10)
    await crm.assert_met_alike(
        in_order, reversed_, started_at=T0 - 30 * MIN, stopped_at=T0 - 10 * MIN, status="sal"
    )


async def test_bad_token_is_refused_and_nothing_is_stored(
    crm: CrmSource, client: httpx.AsyncClient
) -> None:
    body = record(lead_id(30), "Not Contacted", T0 - MIN)
    forgeries: dict[str, tuple[dict[str, str], str | None]] = {
        "wrong header": (body, "wrong"),
        "truncated header": (body, SECRET[:-1]),
        "wrong body parameter": ({**body, "token": "wrong"}, None),
        "none": (body, None),
    }
    for forgery, (sent, token) in forgeries.items():
        response = await deliver(client, sent, token)
        assert response.status_code == 401, (forgery, response.text)
    await crm.assert_nothing_stored()


async def test_records_of_other_modules_are_acknowledged_counted_and_kept(
    crm: CrmSource, client: httpx.AsyncClient
) -> None:
    contact = record(lead_id(40), "Not Contacted", T0, module="Contacts")
    others = [
        record(lead_id(41), "Qualification", T0, module="Deals"),
        record(lead_id(42), "Active", T0, module="Accounts"),
    ]
    before = crm.ignored()
    first = await deliver(client, contact)
    accepted(first, 0)
    second = await deliver(client, others)
    accepted(second, 0)
    assert crm.ignored() - before == 3
    stored = await crm.raw_requests()
    assert [raw.body for raw in stored] == [first.request.content, second.request.content]
    assert [raw.headers["content-type"] for raw in stored] == [FORM, "application/json"]
    assert await crm.leads() == []


async def test_unmapped_status_is_kept_as_sent(crm: CrmSource, client: httpx.AsyncClient) -> None:
    lead = lead_id(50)
    accepted(await deliver(client, record(lead, "Not Contacted", T0 - 20 * MIN)), 2)
    accepted(await deliver(client, record(lead, "Awaiting Reply", T0 - 10 * MIN)), 2)
    detail = await crm.lead(lead)
    assert detail["lead"]["status"] == "Awaiting Reply"
    status_changes = [e for e in detail["timeline"] if e["type"] == "lead.status_changed"]
    assert [e["data"]["status"]["to"] for e in status_changes] == ["mql", "Awaiting Reply"]
    assert (await crm.first_touch(lead))["state"] == "running"
