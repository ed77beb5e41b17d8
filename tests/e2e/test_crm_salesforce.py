"""Salesforce end to end: Outbound Messages (SOAP 1.1 ``notifications``) through
``POST /webhooks/salesforce``, the real database and pipeline, the sweep and a loopback receiver.

The sender is recognised by the message's ``OrganizationId``; each notification carries the
Lead's current field values, and the standard ``Lead.Status`` picklist maps "Open - Not
Contacted" to mql and "Working - Contacted" to sal. Every accepted message is answered with the
SOAP ``Ack`` Salesforce waits for.
"""

from __future__ import annotations

from datetime import datetime
from xml.etree import ElementTree

import httpx
import pytest

from service.clock import FrozenClock
from service.config import Settings
from tests.conftest import Receiver
from tests.e2e.test_crm_common import MIN, T0, TARGET, CrmSource, at, crm_settings

SOURCE = "salesforce"  # the source the ``crm`` fixture speaks for

ORG = "00D5e000000KQ2eEAG"
OWNER = "0055e000001AbCdAAK"
OUTBOUND = "http://soap.sforce.com/2005/09/outbound"
OPEN, WORKING = "Open - Not Contacted", "Working - Contacted"


@pytest.fixture
def settings(database_url: str, receiver: Receiver) -> Settings:
    return crm_settings(database_url, receiver, {SOURCE: ORG})


def stamp(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def notification(
    notification_id: str, lead_id: str, modified: datetime, status: str, sobject: str = "Lead"
) -> str:
    fields = (
        f"<sf:Id>{lead_id}</sf:Id><sf:CreatedDate>2026-11-20T12:00:00.000Z</sf:CreatedDate>"
        f"<sf:Status>{status}</sf:Status><sf:OwnerId>{OWNER}</sf:OwnerId>"
        "<sf:Email>ana@example.com</sf:Email><sf:FirstName>Ana</sf:FirstName>"
        "<sf:LastName>Souza</sf:LastName><sf:LeadSource>Webinar</sf:LeadSource>"
        "<sf:Company>Acme</sf:Company><sf:LastModifiedById>0055e000001XyZwAAK</sf:LastModifiedById>"
        f"<sf:LastModifiedDate>{stamp(modified)}</sf:LastModifiedDate>"
    )
    return (
        f"<Notification><Id>{notification_id}</Id>"
        f'<sObject xsi:type="sf:{sobject}" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">'
        f"{fields}</sObject></Notification>"
    )


def envelope(*notifications: str, org: str = ORG) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        f'<soapenv:Body><notifications xmlns="{OUTBOUND}">'
        f"<OrganizationId>{org}</OrganizationId><ActionId>04k5e000000CaRkAAK</ActionId>"
        '<SessionId xsi:nil="true"/>'
        "<EnterpriseUrl>https://acme.my.salesforce.com/services/Soap/c/61.0/00D5e000000KQ2e"
        "</EnterpriseUrl>"
        "<PartnerUrl>https://acme.my.salesforce.com/services/Soap/u/61.0/00D5e000000KQ2e"
        "</PartnerUrl>" + "".join(notifications) + "</notifications></soapenv:Body>"
        "</soapenv:Envelope>"
    ).encode()


async def deliver(client: httpx.AsyncClient, body: bytes) -> httpx.Response:
    headers = {"content-type": "text/xml; charset=utf-8", "soapaction": '""',
               "user-agent": "Salesforce - OutboundMessaging"}  # fmt: skip
    return await client.post("/webhooks/salesforce", content=body, headers=headers)


def acknowledged(response: httpx.Response) -> None:
    """The SOAP acknowledgement that stops Salesforce retrying."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/xml")
    root = ElementTree.fromstring(response.content)
    assert root.findtext(f".//{{{OUTBOUND}}}notificationsResponse/{{{OUTBOUND}}}Ack") == "true"


async def test_open_status_starts_working_stops_and_an_untouched_lead_breaches_once(
    crm: CrmSource, client: httpx.AsyncClient
) -> None:
    start = T0 - 10 * MIN
    handed_over = envelope(
        notification("04l5e00000Gx7Q1AAJ", "00Q5e00000AbCd1EAZ", start, OPEN),
        notification("04l5e00000Gx7Q2AAJ", "00Q5e00000AbCd2EAZ", start, OPEN),
    )
    acknowledged(await deliver(client, handed_over))
    for lead in ("00Q5e00000AbCd1EAZ", "00Q5e00000AbCd2EAZ"):
        await crm.assert_running(lead, since=start)
    detail = await crm.lead("00Q5e00000AbCd1EAZ")
    assert (detail["lead"]["status"], detail["lead"]["owner"]) == ("mql", OWNER)
    assert detail["lead"]["attributes"]["crm_status"] == OPEN

    working = notification("04l5e00000Gx7Q3AAJ", "00Q5e00000AbCd1EAZ", T0 - 2 * MIN, WORKING)
    acknowledged(await deliver(client, envelope(working)))
    touched = await crm.first_touch("00Q5e00000AbCd1EAZ")
    assert (touched["state"], touched["open"]) == ("met", False)
    assert at(touched["stopped_at"]) == T0 - 2 * MIN
    assert touched["stop_reason"] == "status: sal"

    await crm.assert_breach_sent("00Q5e00000AbCd2EAZ", owner=OWNER, due_at=start + TARGET)
    await crm.assert_not_sent_again()


async def test_redelivered_message_is_acknowledged_and_changes_nothing(
    crm: CrmSource, client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    met, running = "00Q5e00000Re001EAZ", "00Q5e00000Re002EAZ"
    message = envelope(
        notification("04l5e00000Gx8Q1AAJ", met, T0 - 30 * MIN, OPEN),
        notification("04l5e00000Gx8Q2AAJ", met, T0 - 20 * MIN, WORKING),
        notification("04l5e00000Gx8Q3AAJ", running, T0 - 30 * MIN, OPEN),
    )
    acknowledged(await deliver(client, message))
    before = await crm.snapshot(met, running)
    assert before["leads"][met]["cycles"][0]["state"] == "met"
    events = sum(len(lead["timeline"]) for lead in before["leads"].values())

    clock.advance(minutes=1)  # Salesforce did not see the Ack in time and sends it again
    acknowledged(await deliver(client, message))
    assert await crm.snapshot(met, running) == before
    assert events == 6  # status and owner per notification, stored once


async def test_notifications_out_of_order_give_the_cycle_of_the_message_in_order(
    crm: CrmSource, client: httpx.AsyncClient
) -> None:
    def history(lead: str, prefix: str) -> list[str]:
        return [
            notification(f"{prefix}1AAJ", lead, T0 - 40 * MIN, "Nurturing"),
            notification(f"{prefix}2AAJ", lead, T0 - 30 * MIN, OPEN),
            notification(f"{prefix}3AAJ", lead, T0 - 10 * MIN, WORKING),
        ]

    in_order = history("00Q5e00000Or001EAZ", "04l5e00000Or1Q")
    shuffled = history("00Q5e00000Or002EAZ", "04l5e00000Or2Q")[::-1]  # retried out of order
    acknowledged(await deliver(client, envelope(*in_order, *shuffled)))
    await crm.assert_met_alike(
        "00Q5e00000Or001EAZ", "00Q5e00000Or002EAZ",
        started_at=T0 - 30 * MIN, stopped_at=T0 - 10 * MIN, stop_reason="status: sal", status="sal",
    )  # fmt: skip


async def test_message_from_another_org_is_refused_and_nothing_is_stored(
    crm: CrmSource, client: httpx.AsyncClient
) -> None:
    lead = notification("04l5e00000Bad1AAJ", "00Q5e00000Bad01EAZ", T0, OPEN)
    # another org; ours with its case changed (ids are case-sensitive); none at all
    for org in ("00D5e000000ZZZZEAG", "00d5e000000kq2eEAG", ""):
        response = await deliver(client, envelope(lead, org=org))
        assert response.status_code == 401, (org, response.text)
        assert "OrganizationId" in response.json()["error"]
    await crm.assert_nothing_stored()


async def test_notifications_it_does_not_track_are_acknowledged_counted_and_kept(
    crm: CrmSource, client: httpx.AsyncClient
) -> None:
    # A Contact outbound message pointed at this endpoint, and a lead deleted before delivery
    # (Salesforce then sends the notification without the record's fields).
    body = envelope(
        notification("04l5e00000Ign1AAJ", "0035e00000Ct001AAA", T0, OPEN, sobject="Contact"),
        "<Notification><Id>04l5e00000Ign2AAJ</Id>"
        '<sObject xsi:type="sf:Lead" xmlns:sf="urn:sobject.enterprise.soap.sforce.com"/>'
        "</Notification>",
    )
    before = crm.ignored()
    acknowledged(await deliver(client, body))
    assert crm.ignored() - before == 2
    (raw,) = await crm.raw_requests()
    assert raw.body == body
    assert raw.headers["content-type"] == "text/xml; charset=utf-8"
    assert await crm.leads() == []


async def test_unmapped_status_is_kept_as_sent(crm: CrmSource, client: httpx.AsyncClient) -> None:
    lead = "00Q5e00000Un001EAZ"
    message = envelope(
        notification("04l5e00000Un1QAAJ", lead, T0 - 20 * MIN, OPEN),
        notification("04l5e00000Un2QAAJ", lead, T0 - 10 * MIN, "Nurturing"),
    )
    acknowledged(await deliver(client, message))
    detail = await crm.lead(lead)
    assert detail["lead"]["status"] == "Nurturing"
    status_changes = [e for e in detail["timeline"] if e["type"] == "lead.status_changed"]
    assert [e["data"]["status"]["to"] for e in status_changes] == ["mql", "Nurturing"]
    assert (await crm.first_touch(lead))["state"] == "running"
