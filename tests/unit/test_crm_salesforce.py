"""Salesforce Outbound Messages adapter.

Bodies follow the outbound messaging WSDL and its sample message: a SOAP 1.1 envelope whose body
holds ``notifications`` (namespace http://soap.sforce.com/2005/09/outbound) with OrganizationId,
ActionId, SessionId, EnterpriseUrl, PartnerUrl and up to 100 Notification elements, each an Id
and an ``sObject`` of ``xsi:type="sf:Lead"`` in urn:sobject.enterprise.soap.sforce.com.
https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_om_outboundmessaging_wsdl.htm
https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_om_outboundmessaging_notifications.htm
"""

from __future__ import annotations

from datetime import UTC, datetime
from xml.etree import ElementTree

import pytest

from service.crm.base import BadPayload, InboundRequest, SourceConfig, Unauthorized
from service.crm.salesforce import ADAPTER, OUTBOUND_NS, SOAP_ENV_NS

ORG_18 = "00D5e000000KQ2eEAG"
ORG_15 = "00D5e000000KQ2e"
NOW = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)


def lead(
    notification_id: str,
    lead_id: str,
    modified: str,
    status: str | None = "Open - Not Contacted",
    owner: str | None = "0055e000001AbCdAAK",
    created: str = "2026-11-20T12:00:00.000Z",
    extra: str = "",
) -> str:
    fields = [f"<sf:Id>{lead_id}</sf:Id>", f"<sf:CreatedDate>{created}</sf:CreatedDate>"]
    if status is not None:
        fields.append(f"<sf:Status>{status}</sf:Status>")
    if owner is not None:
        fields.append(f"<sf:OwnerId>{owner}</sf:OwnerId>")
    fields += [
        "<sf:Email>ana@example.com</sf:Email>",
        "<sf:FirstName>Ana</sf:FirstName>",
        "<sf:LastName>Souza</sf:LastName>",
        "<sf:LeadSource>Webinar</sf:LeadSource>",
        "<sf:Country>Brazil</sf:Country>",
        "<sf:Rating>Hot</sf:Rating>",
        "<sf:Company>Acme</sf:Company>",
        "<sf:LastModifiedById>0055e000001XyZwAAK</sf:LastModifiedById>",
        f"<sf:LastModifiedDate>{modified}</sf:LastModifiedDate>",
        extra,
    ]
    return (
        f"<Notification><Id>{notification_id}</Id>"
        '<sObject xsi:type="sf:Lead" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">'
        + "".join(fields)
        + "</sObject></Notification>"
    )


def envelope(*notifications: str, org: str = ORG_18) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        "<soapenv:Body>"
        '<notifications xmlns="http://soap.sforce.com/2005/09/outbound">'
        f"<OrganizationId>{org}</OrganizationId>"
        "<ActionId>04k5e000000CaRkAAK</ActionId>"
        '<SessionId xsi:nil="true"/>'
        "<EnterpriseUrl>https://acme.my.salesforce.com/services/Soap/c/61.0/00D5e000000KQ2e"
        "</EnterpriseUrl>"
        "<PartnerUrl>https://acme.my.salesforce.com/services/Soap/u/61.0/00D5e000000KQ2e"
        "</PartnerUrl>"
        + "".join(notifications)
        + "</notifications></soapenv:Body></soapenv:Envelope>"
    ).encode()


def request(body: bytes, query: str = "") -> InboundRequest:
    return InboundRequest(
        method="POST",
        path="/webhooks/salesforce",
        query_string=query,
        headers={"content-type": "text/xml; charset=utf-8", "soapaction": '""'},
        body=body,
        public_url="https://sla.example.com",
        received_at=NOW,
    )


def config(**kwargs: object) -> SourceConfig:
    return SourceConfig(secret=kwargs.pop("secret", ORG_18), **kwargs)  # type: ignore[arg-type]


ONE = envelope(lead("04l5e00000Gx7QzAAJ", "00Q5e00000AbCdEEAZ", "2026-11-23T17:05:00.000Z"))


def test_a_lead_notification_becomes_status_and_owner_events() -> None:
    ADAPTER.authenticate(request(ONE), config())
    delivery = ADAPTER.parse(request(ONE), config())

    assert delivery.ignored == 0
    by_type = {event.type: event for event in delivery.events}
    assert set(by_type) == {"lead.status_changed", "lead.assigned"}
    status = by_type["lead.status_changed"]
    assert status.event_id == "04l5e00000Gx7QzAAJ:status"
    assert status.status is not None
    assert status.status.to == "mql"
    assert status.status.from_ is None
    assert status.occurred_at == datetime(2026, 11, 23, 17, 5, tzinfo=UTC)
    snapshot = status.lead
    assert snapshot.id == "00Q5e00000AbCdEEAZ"
    assert snapshot.status == "mql"
    assert snapshot.email == "ana@example.com"
    assert snapshot.name == "Ana Souza"
    assert snapshot.source == "Webinar"
    assert snapshot.country == "Brazil"
    assert snapshot.priority == "high"
    assert snapshot.attributes["Company"] == "Acme"
    assert snapshot.attributes["crm_status"] == "Open - Not Contacted"
    owner = by_type["lead.assigned"]
    assert owner.event_id == "04l5e00000Gx7QzAAJ:owner"
    assert owner.owner is not None
    assert owner.owner.to == "0055e000001AbCdAAK"
    # only the status event moves the status, so a clock start is attributed to it
    assert owner.lead.status is None
    assert not status.self_originated


def test_the_15_character_org_id_authenticates_an_18_character_message() -> None:
    ADAPTER.authenticate(request(ONE), config(secret=ORG_15))
    ADAPTER.authenticate(request(envelope(org=ORG_15)), config(secret=ORG_18))


def test_another_org_is_unauthorized() -> None:
    other = envelope(org="00D5e000000ZZZZEAG")
    with pytest.raises(Unauthorized, match="OrganizationId"):
        ADAPTER.authenticate(request(other), config())
    # the 15-character id is case-sensitive
    with pytest.raises(Unauthorized):
        ADAPTER.authenticate(request(ONE), config(secret=ORG_15.lower()))


def test_missing_secret_says_none_is_configured() -> None:
    with pytest.raises(Unauthorized, match="no secret is configured"):
        ADAPTER.authenticate(request(ONE), SourceConfig(secret=None))
    with pytest.raises(Unauthorized, match="no secret is configured"):
        ADAPTER.authenticate(request(ONE), SourceConfig(secret=""))


def test_a_secret_that_is_not_an_org_id_is_refused() -> None:
    with pytest.raises(Unauthorized, match="organization id"):
        ADAPTER.authenticate(request(ONE), config(secret="hunter2"))


def test_missing_organization_id_is_unauthorized() -> None:
    body = ONE.replace(f"<OrganizationId>{ORG_18}</OrganizationId>".encode(), b"")
    with pytest.raises(Unauthorized):
        ADAPTER.authenticate(request(body), config())


def test_optional_url_token_is_required_when_configured() -> None:
    strict = config(options={"url_token": "t0ken"})
    ADAPTER.authenticate(request(ONE, query="token=t0ken"), strict)
    with pytest.raises(Unauthorized, match="token"):
        ADAPTER.authenticate(request(ONE, query="token=nope"), strict)
    with pytest.raises(Unauthorized, match="token"):
        ADAPTER.authenticate(request(ONE), strict)


def test_redelivery_maps_to_the_same_event_ids() -> None:
    first = ADAPTER.parse(request(ONE), config())
    again = ADAPTER.parse(request(ONE), config())
    assert [e.event_id for e in first.events] == [e.event_id for e in again.events]
    assert [e.occurred_at for e in first.events] == [e.occurred_at for e in again.events]


WORKING = "Working - Contacted"
LOST = "Closed - Not Converted"


def test_a_batch_out_of_order_keeps_each_notifications_own_time() -> None:
    body = envelope(
        lead("04l000000000002AAA", "00Q000000000002AAA", "2026-11-23T16:00:00.000Z", WORKING),
        lead("04l000000000001AAA", "00Q000000000001AAA", "2026-11-23T15:00:00.000+00:00"),
        lead("04l000000000003AAA", "00Q000000000001AAA", "2026-11-23T12:30:00.000-03:00", LOST),
    )
    delivery = ADAPTER.parse(request(body), config())
    statuses = {
        e.event_id: (e.occurred_at, e.status.to if e.status else None)
        for e in delivery.events
        if e.type == "lead.status_changed"
    }
    assert statuses == {
        "04l000000000002AAA:status": (datetime(2026, 11, 23, 16, 0, tzinfo=UTC), "sal"),
        "04l000000000001AAA:status": (datetime(2026, 11, 23, 15, 0, tzinfo=UTC), "mql"),
        "04l000000000003AAA:status": (datetime(2026, 11, 23, 15, 30, tzinfo=UTC), "disqualified"),
    }
    disqualified = next(e for e in delivery.events if e.event_id == "04l000000000003AAA:status")
    assert disqualified.status is not None
    assert disqualified.status.reason == "Closed - Not Converted"


def test_status_map_override_wins_and_unknown_values_are_kept() -> None:
    body = envelope(
        lead("04l000000000001AAA", "00Q000000000001AAA", "2026-11-23T15:00:00.000Z"),
        lead("04l000000000002AAA", "00Q000000000002AAA", "2026-11-23T15:00:00.000Z", "Nurturing"),
        lead("04l000000000003AAA", "00Q000000000003AAA", "2026-11-23T15:00:00.000Z", "Recontact"),
    )
    overrides = config(status_map={"Open - Not Contacted": "new", "nurturing": "recycled"})
    got = {
        e.lead.id: e.status.to
        for e in ADAPTER.parse(request(body), overrides).events
        if e.status is not None
    }
    assert got == {
        "00Q000000000001AAA": "new",
        "00Q000000000002AAA": "recycled",
        "00Q000000000003AAA": "Recontact",
    }


def test_unknown_content_is_counted_as_ignored_not_raised() -> None:
    contact = (
        "<Notification><Id>04l000000000009AAA</Id>"
        '<sObject xsi:type="sf:Contact" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">'
        "<sf:Id>0035e00000AbCdEAAV</sf:Id></sObject></Notification>"
    )
    deleted_before_delivery = (
        "<Notification><Id>04l000000000008AAA</Id>"
        '<sObject xsi:type="sf:Lead" xmlns:sf="urn:sobject.enterprise.soap.sforce.com"/>'
        "</Notification>"
    )
    body = envelope(
        contact,
        deleted_before_delivery,
        lead(
            "04l000000000001AAA",
            "00Q000000000001AAA",
            "2026-11-23T15:00:00.000Z",
            extra="<sf:Segment__c>health</sf:Segment__c><sf:Unheard_Of__c>x</sf:Unheard_Of__c>",
        ),
        "<FutureElement>whatever</FutureElement>",
    )
    delivery = ADAPTER.parse(request(body), config())
    assert delivery.ignored == 2
    assert {e.lead.id for e in delivery.events} == {"00Q000000000001AAA"}
    assert delivery.events[0].lead.attributes["Segment__c"] == "health"


def test_field_map_fills_canonical_fields_from_custom_fields() -> None:
    body = envelope(
        lead(
            "04l000000000001AAA",
            "00Q000000000001AAA",
            "2026-11-23T15:00:00.000Z",
            extra="<sf:Team__c>emea</sf:Team__c><sf:Score__c>87</sf:Score__c>",
        )
    )
    cfg = config(options={"field_map": {"team": "Team__c", "score": "Score__c"}})
    snapshot = ADAPTER.parse(request(body), cfg).events[0].lead
    assert snapshot.team == "emea"
    assert snapshot.score == 87.0
    assert "Team__c" not in snapshot.attributes


def test_changes_by_the_integration_user_are_self_originated() -> None:
    cfg = config(options={"self_user_ids": ["0055e000001XyZw"]})
    delivery = ADAPTER.parse(request(ONE), cfg)
    assert delivery.events
    assert all(e.self_originated for e in delivery.events)


def test_a_notification_for_a_new_lead_also_marks_its_creation() -> None:
    body = envelope(
        lead(
            "04l000000000001AAA",
            "00Q000000000001AAA",
            "2026-11-23T15:00:00.000Z",
            created="2026-11-23T15:00:00.000Z",
        )
    )
    events = ADAPTER.parse(request(body), config()).events
    assert [e.type for e in sorted(events, key=lambda e: e.order_key)] == [
        "lead.created",
        "lead.assigned",
        "lead.status_changed",
    ]


def test_a_notification_without_status_or_owner_is_an_update() -> None:
    body = envelope(
        lead("04l000000000001AAA", "00Q000000000001AAA", "2026-11-23T15:00:00.000Z", None, None)
    )
    events = ADAPTER.parse(request(body), config()).events
    assert [(e.event_id, e.type) for e in events] == [
        ("04l000000000001AAA:updated", "lead.updated")
    ]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not xml at all",
        b"<soapenv:Envelope><unclosed>",
        b'{"json": "instead"}',
        b'<?xml version="1.0"?><Envelope xmlns="http://schemas.xmlsoap.org/soap/envelope/"/>',
    ],
)
def test_malformed_body_is_bad_payload(body: bytes) -> None:
    with pytest.raises(BadPayload):
        ADAPTER.parse(request(body), config())
    with pytest.raises(BadPayload):
        ADAPTER.authenticate(request(body), config())


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>
<notifications xmlns="http://soap.sforce.com/2005/09/outbound">
<OrganizationId>00D5e000000KQ2eEAG</OrganizationId><ActionId>&lol9;</ActionId>
</notifications></soapenv:Body></soapenv:Envelope>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>
<notifications xmlns="http://soap.sforce.com/2005/09/outbound">
<OrganizationId>00D5e000000KQ2eEAG</OrganizationId><ActionId>&xxe;</ActionId>
</notifications></soapenv:Body></soapenv:Envelope>"""


@pytest.mark.parametrize("body", [BILLION_LAUGHS, EXTERNAL_ENTITY], ids=["bomb", "xxe"])
def test_entity_expansion_and_external_entities_are_rejected(body: bytes) -> None:
    with pytest.raises(BadPayload, match="refused"):
        ADAPTER.authenticate(request(body), config())
    with pytest.raises(BadPayload, match="refused"):
        ADAPTER.parse(request(body), config())


def test_ack_is_a_well_formed_soap_envelope_in_the_outbound_namespace() -> None:
    answer = ADAPTER.success_response(accepted=2, duplicates=1)
    assert answer.media_type == "text/xml"
    assert answer.body is not None
    root = ElementTree.fromstring(answer.body)
    assert root.tag == f"{{{SOAP_ENV_NS}}}Envelope"
    body = root.find(f"{{{SOAP_ENV_NS}}}Body")
    assert body is not None
    response = body.find(f"{{{OUTBOUND_NS}}}notificationsResponse")
    assert response is not None
    ack = response.find(f"{{{OUTBOUND_NS}}}Ack")
    assert ack is not None
    assert ack.text == "true"
    assert OUTBOUND_NS == "http://soap.sforce.com/2005/09/outbound"
