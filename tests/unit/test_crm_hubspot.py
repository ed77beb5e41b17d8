"""HubSpot adapter: signature v3 and contact notifications.

Bodies follow the Webhooks API payload documented at
https://developers.hubspot.com/docs/api/webhooks ("Webhook payloads"); the signature rules are
https://developers.hubspot.com/docs/apps/legacy-apps/authentication/validating-requests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from service.crm.base import BadPayload, InboundRequest, ParsedDelivery, SourceConfig, Unauthorized
from service.crm.hubspot import ADAPTER, signature_v3
from service.sla.types import Activity, sort_and_dedupe

SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
PUBLIC_URL = "https://sla.example.com"
PATH = "/webhooks/hubspot"
NOW = datetime(2026, 11, 23, 17, 0, tzinfo=UTC)
CONFIG = SourceConfig(secret=SECRET)

# The example payload of HubSpot's webhooks documentation, verbatim (its two notifications).
DOC_BATCH: list[dict[str, Any]] = [
    {
        "objectId": 1246965,
        "propertyName": "lifecyclestage",
        "propertyValue": "subscriber",
        "changeSource": "ACADEMY",
        "eventId": 3816279340,
        "subscriptionId": 25,
        "portalId": 33,
        "appId": 1160452,
        "occurredAt": 1462216307945,
        "subscriptionType": "contact.propertyChange",
        "attemptNumber": 0,
    },
    {
        "objectId": 1246978,
        "changeSource": "IMPORT",
        "eventId": 3816279480,
        "subscriptionId": 22,
        "portalId": 33,
        "appId": 1160452,
        "occurredAt": 1462216307945,
        "subscriptionType": "contact.creation",
        "attemptNumber": 0,
    },
]


def hubspot_signature(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """Computed here independently of the adapter, as HubSpot's docs describe it."""
    source = f"{method}{uri}{body.decode()}{timestamp}".encode()
    return base64.b64encode(hmac.new(secret.encode(), source, hashlib.sha256).digest()).decode()


def request(
    body: bytes | list[dict[str, Any]],
    *,
    secret: str = SECRET,
    sent_at: datetime | None = None,
    query: str = "",
    signed_query: str | None = None,
    signature: str | None = None,
    received_at: datetime = NOW,
) -> InboundRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    timestamp = str(int((sent_at or received_at - timedelta(seconds=2)).timestamp() * 1000))
    signed = signed_query if signed_query is not None else query
    uri = PUBLIC_URL + PATH + (f"?{signed}" if signed else "")
    headers = {
        "x-hubspot-signature-v3": signature
        or hubspot_signature(secret, "POST", uri, raw, timestamp),
        "x-hubspot-request-timestamp": timestamp,
        "x-hubspot-signature-version": "v1",
        "content-type": "application/json",
    }
    return InboundRequest(
        method="POST",
        path=PATH,
        query_string=query,
        headers=headers,
        body=raw,
        public_url=PUBLIC_URL,
        received_at=received_at,
    )


def notification(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "eventId": 100,
        "subscriptionId": 1234,
        "portalId": 62515,
        "appId": 54321,
        "occurredAt": 1795443600000,  # 2026-11-23T14:20:00Z
        "subscriptionType": "contact.propertyChange",
        "attemptNumber": 0,
        "objectId": 123,
        "propertyName": "lifecyclestage",
        "propertyValue": "marketingqualifiedlead",
        "changeSource": "CRM",
        "sourceId": "userId:12345",
    }
    base.update(overrides)
    return base


def property_change(event_id: int, name: str, value: str) -> dict[str, Any]:
    return notification(eventId=event_id, propertyName=name, propertyValue=value)


def lead_status(event_id: int, value: str) -> dict[str, Any]:
    return property_change(event_id, "hs_lead_status", value)


def parse(body: list[Any], config: SourceConfig = CONFIG) -> ParsedDelivery:
    return ADAPTER.parse(request(body), config)


# --- signature ------------------------------------------------------------------------------


def test_signature_matches_hubspot_python_sdk_vector() -> None:
    # hubspot-api-python tests/spec/utils/test_signature.py::test_get_signature__v3, verbatim.
    assert (
        signature_v3(
            "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy",
            "POST",
            "https://www.example.com/webhook_uri",
            b"{'example_field':'example_value'}",
            "15000000",
        )
        == "HPW73RUtKmcYoEDADG0s6MmGFWUzWJKAW07r8RDgcQw="
    )


def test_sdk_vector_authenticates_a_request() -> None:
    inbound = InboundRequest(
        method="POST",
        path="/webhook_uri",
        query_string="",
        headers={
            "x-hubspot-signature-v3": "HPW73RUtKmcYoEDADG0s6MmGFWUzWJKAW07r8RDgcQw=",
            "x-hubspot-request-timestamp": "15000000",
        },
        body=b"{'example_field':'example_value'}",
        public_url="https://www.example.com",
        received_at=datetime.fromtimestamp(15000000 / 1000, tz=UTC) + timedelta(minutes=1),
    )
    ADAPTER.authenticate(inbound, SourceConfig(secret="yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"))


def test_valid_request_authenticates_and_parses_the_documented_batch() -> None:
    inbound = request(DOC_BATCH)
    ADAPTER.authenticate(inbound, CONFIG)
    delivery = ADAPTER.parse(inbound, CONFIG)
    assert delivery.ignored == 0
    by_type = {event.type: event for event in delivery.events}
    changed = by_type["lead.status_changed"]
    assert changed.lead.id == "1246965"
    assert changed.status is not None and changed.status.to == "new"
    assert changed.status.from_ is None  # HubSpot only sends the new value
    assert changed.occurred_at == datetime(2016, 5, 2, 19, 11, 47, 945000, tzinfo=UTC)
    assert changed.event_id == "33:3816279340:25:1246965"
    created = by_type["lead.created"]
    assert created.lead.id == "1246978"
    assert created.self_originated is False


def test_bad_signature_is_rejected() -> None:
    with pytest.raises(Unauthorized, match="does not match"):
        ADAPTER.authenticate(request(DOC_BATCH, secret="another-secret"), CONFIG)


def test_tampered_body_is_rejected() -> None:
    signed = request(DOC_BATCH)
    tampered = InboundRequest(
        method=signed.method,
        path=signed.path,
        query_string=signed.query_string,
        headers=signed.headers,
        body=signed.body.replace(b"subscriber", b"customer"),
        public_url=signed.public_url,
        received_at=signed.received_at,
    )
    with pytest.raises(Unauthorized):
        ADAPTER.authenticate(tampered, CONFIG)


def test_signature_over_another_url_is_rejected() -> None:
    inbound = request(DOC_BATCH)
    moved = InboundRequest(
        method=inbound.method,
        path="/webhooks/other",
        query_string="",
        headers=inbound.headers,
        body=inbound.body,
        public_url=inbound.public_url,
        received_at=inbound.received_at,
    )
    with pytest.raises(Unauthorized):
        ADAPTER.authenticate(moved, CONFIG)


@pytest.mark.parametrize("age", [timedelta(minutes=5, seconds=1), timedelta(hours=3)])
def test_stale_timestamp_is_rejected_even_with_a_valid_signature(age: timedelta) -> None:
    with pytest.raises(Unauthorized, match="stale"):
        ADAPTER.authenticate(request(DOC_BATCH, sent_at=NOW - age), CONFIG)


def test_timestamp_far_in_the_future_is_rejected() -> None:
    with pytest.raises(Unauthorized, match="stale"):
        ADAPTER.authenticate(request(DOC_BATCH, sent_at=NOW + timedelta(minutes=6)), CONFIG)


def test_timestamp_just_inside_five_minutes_is_accepted() -> None:
    ADAPTER.authenticate(request(DOC_BATCH, sent_at=NOW - timedelta(minutes=4, seconds=59)), CONFIG)


def test_missing_secret_is_unauthorized_with_a_clear_message() -> None:
    with pytest.raises(Unauthorized, match="LEAD_SLA_WEBHOOK_SECRET_HUBSPOT"):
        ADAPTER.authenticate(request(DOC_BATCH), SourceConfig(secret=None))


def test_missing_signature_headers_are_unauthorized() -> None:
    inbound = request(DOC_BATCH)
    bare = InboundRequest(
        method=inbound.method,
        path=inbound.path,
        query_string="",
        headers={"content-type": "application/json"},
        body=inbound.body,
        public_url=inbound.public_url,
        received_at=inbound.received_at,
    )
    with pytest.raises(Unauthorized, match="missing"):
        ADAPTER.authenticate(bare, CONFIG)


def test_query_string_is_signed_with_hubspots_decodings() -> None:
    # %3A and %2F are on HubSpot's list and are decoded before signing; %20 is not.
    raw_query = "tenant=acme%3Aemea&next=%2Fhome&name=a%20b"
    inbound = request(
        DOC_BATCH, query=raw_query, signed_query="tenant=acme:emea&next=/home&name=a%20b"
    )
    ADAPTER.authenticate(inbound, CONFIG)
    undecoded = request(DOC_BATCH, query=raw_query, signed_query=raw_query)
    with pytest.raises(Unauthorized):
        ADAPTER.authenticate(undecoded, CONFIG)


# --- parsing --------------------------------------------------------------------------------


def test_redelivery_with_a_new_attempt_number_keeps_the_event_id() -> None:
    first = parse([notification(attemptNumber=0)]).events[0]
    retry = parse([notification(attemptNumber=3)]).events[0]
    assert first.event_id == retry.event_id == "62515:100:1234:123"


def test_notifications_sharing_an_event_id_stay_distinct() -> None:
    # HubSpot documents eventId as "not guaranteed to be unique".
    events = parse(
        [
            notification(subscriptionId=1, propertyName="lifecyclestage"),
            notification(subscriptionId=2, propertyName="hubspot_owner_id", propertyValue="7"),
        ]
    ).events
    assert len({event.event_id for event in events}) == 2


def test_batch_out_of_order_keeps_each_occurred_at() -> None:
    t0 = 1795443600000
    batch = [
        notification(eventId=3, occurredAt=t0 + 120_000, propertyValue="salesqualifiedlead"),
        notification(eventId=1, occurredAt=t0, propertyValue="lead"),
        notification(eventId=2, occurredAt=t0 + 60_000, propertyValue="marketingqualifiedlead"),
    ]
    events = parse(batch).events
    assert [e.occurred_at for e in events] == [
        datetime(2026, 11, 23, 14, 22, tzinfo=UTC),
        datetime(2026, 11, 23, 14, 20, tzinfo=UTC),
        datetime(2026, 11, 23, 14, 21, tzinfo=UTC),
    ]
    ordered = sort_and_dedupe(events)
    assert [e.status.to for e in ordered if e.status] == ["new", "mql", "sql"]


@pytest.mark.parametrize(
    ("value", "status"),
    [
        ("subscriber", "new"),
        ("lead", "new"),
        ("marketingqualifiedlead", "mql"),
        ("salesqualifiedlead", "sql"),
        ("opportunity", "opportunity"),
        ("customer", "customer"),
        ("evangelist", "customer"),
        ("other", "other"),
        ("1034567", "1034567"),  # a custom stage is kept exactly as sent
    ],
)
def test_lifecycle_stage_map(value: str, status: str) -> None:
    (event,) = parse([notification(propertyValue=value)]).events
    assert event.type == "lead.status_changed"
    assert event.status is not None and event.status.to == status
    assert event.lead.attributes == {"lifecyclestage": value}


@pytest.mark.parametrize(
    ("value", "status"),
    [
        ("NEW", "new"),
        ("OPEN", "new"),
        ("IN_PROGRESS", "sal"),
        ("OPEN_DEAL", "opportunity"),
        ("UNQUALIFIED", "disqualified"),
        ("BAD_TIMING", "recycled"),
        ("Custom_Status", "Custom_Status"),
    ],
)
def test_lead_status_map(value: str, status: str) -> None:
    (event,) = parse([notification(propertyName="hs_lead_status", propertyValue=value)]).events
    assert event.type == "lead.status_changed"
    assert event.status is not None and event.status.to == status


def test_contact_attempt_lead_statuses_are_activities() -> None:
    attempted, connected = parse(
        [
            notification(
                eventId=1, propertyName="hs_lead_status", propertyValue="ATTEMPTED_TO_CONTACT"
            ),
            lead_status(2, "CONNECTED"),
        ]
    ).events
    assert attempted.type == connected.type == "lead.activity"
    assert attempted.activity == Activity(kind="attempt")
    assert connected.activity == Activity(kind="call", outcome="connected")


def test_status_map_override_from_config_wins() -> None:
    config = SourceConfig(
        secret=SECRET,
        status_map={"marketingqualifiedlead": "sal", "ATTEMPTED_TO_CONTACT": "unreachable"},
    )
    mql, attempted = parse(
        [
            notification(eventId=1),
            notification(
                eventId=2, propertyName="hs_lead_status", propertyValue="ATTEMPTED_TO_CONTACT"
            ),
        ],
        config,
    ).events
    assert mql.status is not None and mql.status.to == "sal"
    assert attempted.type == "lead.status_changed"
    assert attempted.status is not None and attempted.status.to == "unreachable"


def test_owner_change_is_an_assignment() -> None:
    assigned, cleared = parse(
        [
            notification(eventId=1, propertyName="hubspot_owner_id", propertyValue="41234567"),
            notification(eventId=2, propertyName="hubspot_owner_id", propertyValue=""),
        ]
    ).events
    assert assigned.type == "lead.assigned"
    assert assigned.owner is not None and assigned.owner.to == "41234567"
    assert cleared.owner is not None and cleared.owner.to is None


def test_known_properties_update_lead_fields() -> None:
    events = parse(
        [
            notification(eventId=1, propertyName="email", propertyValue="ana@example.com"),
            notification(eventId=2, propertyName="firstname", propertyValue="Ana"),
            notification(eventId=3, propertyName="lastname", propertyValue="Silva"),
            notification(
                eventId=4, propertyName="hs_analytics_source", propertyValue="PAID_SEARCH"
            ),
            notification(eventId=5, propertyName="country", propertyValue="Brazil"),
        ]
    ).events
    assert all(e.type == "lead.updated" for e in events)
    email, first, last, source, country = (e.lead for e in events)
    assert email.email == "ana@example.com"
    assert first.name == "Ana"
    assert last.name is None and last.attributes == {"lastname": "Silva"}
    assert source.source == "PAID_SEARCH"
    assert country.country == "Brazil"


def test_unknown_types_and_properties_are_counted_not_raised() -> None:
    delivery = parse(
        [
            notification(eventId=1, propertyName="phone", propertyValue="+5511999999999"),
            notification(eventId=2, subscriptionType="company.creation"),
            notification(eventId=3, subscriptionType="deal.propertyChange"),
            notification(eventId=4, subscriptionType="contact.merge"),
            notification(eventId=5, subscriptionType="conversation.newMessage"),
            notification(eventId=6, subscriptionType="object.creation", objectTypeId="0-2"),
            notification(eventId=7, occurredAt="yesterday"),
            {"unexpected": True},
            "not an object",
            notification(eventId=8),
        ]
    )
    assert delivery.ignored == 9
    assert [e.event_id for e in delivery.events] == ["62515:8:1234:123"]


def test_contact_creation_deletion_and_generic_object_subscriptions() -> None:
    created, deleted, privacy, generic = parse(
        [
            notification(eventId=1, subscriptionType="contact.creation"),
            notification(eventId=2, subscriptionType="contact.deletion"),
            notification(eventId=3, subscriptionType="contact.privacyDeletion"),
            notification(eventId=4, subscriptionType="object.creation", objectTypeId="0-1"),
        ]
    ).events
    assert created.type == generic.type == "lead.created"
    assert deleted.type == privacy.type == "lead.deleted"


def test_older_event_type_field_is_understood() -> None:
    body = notification()
    body["eventType"] = body.pop("subscriptionType")
    (event,) = parse([body]).events
    assert event.type == "lead.status_changed"


def test_hubspot_nodejs_sdk_signature_test_body_parses() -> None:
    # The request body of hubspot-api-nodejs test/unit/signature.spec.ts, verbatim.
    body = (
        b'[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,'
        b'"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,'
        b'"changeSource":"CRM","changeFlag":"NEW","appId":54321}]'
    )
    (event,) = ADAPTER.parse(request(body), CONFIG).events
    assert event.type == "lead.created"
    assert event.lead.id == "123"
    assert event.occurred_at == datetime(2019, 7, 26, 4, 0, tzinfo=UTC)


def test_body_that_is_not_json_is_a_bad_payload() -> None:
    with pytest.raises(BadPayload):
        ADAPTER.parse(request(b"<xml/>"), CONFIG)


def test_json_that_is_not_an_array_is_a_bad_payload() -> None:
    with pytest.raises(BadPayload):
        ADAPTER.parse(request(json.dumps(notification()).encode()), CONFIG)


def test_changes_made_by_our_own_app_are_flagged() -> None:
    config = SourceConfig(secret=SECRET, options={"app_id": 9318066})
    ours, someone_else, person = parse(
        [
            notification(eventId=1, changeSource="INTEGRATION", sourceId="9318066"),
            notification(eventId=2, changeSource="INTEGRATION", sourceId="1160452"),
            notification(eventId=3, changeSource="CRM_UI", sourceId="userId:9318066"),
        ],
        config,
    ).events
    assert ours.self_originated is True
    assert someone_else.self_originated is False
    assert person.self_originated is False


def test_nothing_is_self_originated_without_an_app_id() -> None:
    (event,) = parse([notification(changeSource="INTEGRATION", sourceId="9318066")]).events
    assert event.self_originated is False


def test_success_response_is_the_standard_json_answer() -> None:
    assert ADAPTER.success_response(2, 1).body is None
