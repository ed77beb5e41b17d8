"""Close adapter: signature key, event-log webhooks.

The opportunity body is the example of https://developer.close.com/topics/webhooks verbatim; the
other bodies follow the same event format (fields as in Close's event log,
https://developer.close.com/api/resources/events). The signature is computed the way the
"Python 3 Signature Verification Example" on the webhooks page does, with the key shown there.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from service.crm.base import BadPayload, InboundRequest, ParsedDelivery, SourceConfig, Unauthorized
from service.crm.close import ADAPTER
from service.sla.types import Activity, OwnerChange, StatusChange, sort_and_dedupe

# The `signature_key` of Close's verification example.
KEY = "058bfb6a3d8cfdc4da7c3be5901b16ae11da982b46a25fb2cd7016e97a140a1c"
CONFIG = SourceConfig(secret=KEY)
NOW = datetime(2026, 11, 23, 17, 0, tzinfo=UTC)
LEAD = "lead_zwqYhEFwzPyfCErS8uQ77is2wFLvr9BgVi6cTfbFM68"
USER = "user_N6KhMpzHRCYQHdn4gRNIFNN5JExnsrprKA6ekxM63XA"

OPPORTUNITY_WON: dict[str, Any] = {
    "event": {
        "date_created": "2019-01-15T12:48:23.395000",
        "meta": {
            "request_method": "PUT",
            "request_path": "/api/v1/opportunity/oppo_7H4sjNso7FyBFaeR3RXi5PMJbilfo0c6UPCxsJtEhCO/",
        },
        "id": "ev_2sYKRjcrA79yKxi3S4Crd7",
        "action": "updated",
        "date_updated": "2019-01-15T12:48:23.395000",
        "changed_fields": [
            "confidence",
            "date_updated",
            "status_id",
            "status_label",
            "status_type",
        ],
        "previous_data": {
            "status_type": "active",
            "confidence": 70,
            "date_updated": "2019-01-15T12:47:39.873000+00:00",
            "status_id": "stat_3FD9DnGUCJzccBKTh8LiiKoyVPpMJsOkJdcGoA5AYKH",
            "status_label": "Active",
        },
        "organization_id": "orga_XbVPx5fFbKlYTz9PW5Ih1XDhViV10YihIaEgMEb6fVW",
        "data": {
            "contact_name": "Mr. Jones",
            "user_name": "Joe Kemp",
            "value_period": "one_time",
            "updated_by_name": "Joe Kemp",
            "date_created": "2019-01-15T12:41:24.496000+00:00",
            "user_id": USER,
            "updated_by": USER,
            "value_currency": "USD",
            "organization_id": "orga_XbVPx5fFbKlYTz9PW5Ih1XDhViV10YihIaEgMEb6fVW",
            "status_label": "Won",
            "contact_id": "cont_BwlwYQkIP6AooiXP1CMvc6Zbb5gGh2gPu4dqIDlDrII",
            "status_type": "won",
            "created_by_name": "Joe Kemp",
            "id": "oppo_8H4sjNso7FyBFaeR3RXi5PMJbilfo0c6UPCxsJtEhCO",
            "lead_name": "KLine",
            "date_lost": None,
            "note": "",
            "date_updated": "2019-01-15T12:48:23.392000+00:00",
            "status_id": "stat_wMS9M6HC2O3CSEOzF5g2vEGt6RM5R3RfhIQixdnmjf2",
            "value": 100000,
            "created_by": USER,
            "value_formatted": "$1,000",
            "date_won": "2019-01-15",
            "lead_id": LEAD,
            "confidence": 100,
        },
        "request_id": "req_4S2L8JTBAA1OUS74SVmfbN",
        "object_id": "oppo_7H4sjNso7FyBFaeR3RXi5PMJbilfo0c6UPCxsJtEhCO",
        "user_id": USER,
        "object_type": "opportunity",
        "lead_id": LEAD,
    },
    "subscription_id": "whsub_8AmjKCZYT3zI8eZoi4HhFC",
}


def close_event(
    object_type: str,
    action: str,
    data: dict[str, Any],
    *,
    event_id: str = "ev_1ntH1vAE4G7DNjNZYkMeck",
    previous: dict[str, Any] | None = None,
    date_created: str = "2026-11-23T14:20:00.000000",
    **extra: Any,
) -> dict[str, Any]:
    """An event-log entry as Close posts it (see the lead `created` entries of the event log)."""
    event: dict[str, Any] = {
        "id": event_id,
        "date_created": date_created,
        "date_updated": date_created,
        "organization_id": "orga_XbVPx5fFbKlYTz9PW5Ih1XDhViV10YihIaEgMEb6fVW",
        "user_id": USER,
        "request_id": "req_1B0t9wF68LfveKOdLNsbVE",
        "api_key_id": None,
        "oauth_client_id": None,
        "oauth_scope": None,
        "object_type": object_type,
        "object_id": data.get("id"),
        "lead_id": data.get("lead_id", LEAD),
        "action": action,
        "changed_fields": sorted(previous) if previous else [],
        "meta": {"request_path": "/api/v1/lead/", "request_method": "POST"},
        "data": data,
        "previous_data": previous or {},
    }
    event.update(extra)
    return {"subscription_id": "whsub_1zwvQVQOBPFqrH6xXJEvFJ", "event": event}


LEAD_DATA: dict[str, Any] = {
    "status_id": "stat_w883GIAbRCWhns1gvURwAaImLfsmA4SwN5HYLsToMOY",
    "display_name": "Lowell Bast",
    "created_by": USER,
    "addresses": [],
    "name": "",
    "description": "",
    "url": None,
    "contact_ids": ["cont_xASn6XuY8qQuUq6FN919ia9jjg3QvkKXDXx90pytjAE"],
    "date_updated": "2025-05-20T12:14:56.444000+00:00",
    "id": LEAD,
    "status_label": "Potential",
    "date_created": "2025-05-20T12:14:56.409000+00:00",
    "custom.cf_owner": "user_RoWq89U2oZOlTTfJScR9pTREnX3AAeNdKnw4YOOcYwG",
}
QUALIFIED = {"status_id": "stat_qual", "status_label": "Qualified"}


def sign(key: str, timestamp: str, payload: bytes) -> str:
    """Close's documented verification example."""
    data = timestamp + payload.decode()
    return hmac.new(bytearray.fromhex(key), data.encode("utf-8"), hashlib.sha256).hexdigest()


def deliver(
    body: dict[str, Any] | bytes,
    *,
    key: str = KEY,
    sent_at: datetime | None = None,
    signature: str | None = None,
) -> InboundRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    timestamp = str(int((sent_at or NOW - timedelta(seconds=1)).timestamp()))
    return InboundRequest(
        method="POST",
        path="/webhooks/close",
        query_string="",
        headers={
            "close-sig-hash": signature or sign(key, timestamp, raw),
            "close-sig-timestamp": timestamp,
            "content-type": "application/json",
        },
        body=raw,
        public_url="https://sla.example.com",
        received_at=NOW,
    )


def parse(body: dict[str, Any], config: SourceConfig = CONFIG) -> ParsedDelivery:
    return ADAPTER.parse(deliver(body), config)


# --- signature ------------------------------------------------------------------------------


def test_valid_signature_authenticates_and_the_documented_event_parses() -> None:
    inbound = deliver(OPPORTUNITY_WON)
    ADAPTER.authenticate(inbound, CONFIG)
    (event,) = ADAPTER.parse(inbound, CONFIG).events
    assert event.event_id == "ev_2sYKRjcrA79yKxi3S4Crd7"
    assert event.type == "lead.status_changed"
    assert event.lead.id == LEAD
    assert event.status == StatusChange(to="customer", from_="opportunity")
    # Close sends event dates without an offset: they are UTC.
    assert event.occurred_at == datetime(2019, 1, 15, 12, 48, 23, 395000, tzinfo=UTC)


def test_signature_with_another_key_is_rejected() -> None:
    other = "1" * 64
    with pytest.raises(Unauthorized, match="does not match"):
        ADAPTER.authenticate(deliver(OPPORTUNITY_WON, key=other), CONFIG)


def test_signature_keyed_with_the_hex_text_instead_of_its_bytes_is_rejected() -> None:
    raw = json.dumps(OPPORTUNITY_WON).encode()
    sent_at = NOW - timedelta(seconds=1)
    timestamp = str(int(sent_at.timestamp()))
    wrong = hmac.new(KEY.encode(), timestamp.encode() + raw, hashlib.sha256).hexdigest()
    with pytest.raises(Unauthorized):
        ADAPTER.authenticate(deliver(raw, sent_at=sent_at, signature=wrong), CONFIG)
    right = sign(KEY, timestamp, raw)
    ADAPTER.authenticate(deliver(raw, sent_at=sent_at, signature=right), CONFIG)


def test_tampered_body_is_rejected() -> None:
    good = deliver(OPPORTUNITY_WON)
    tampered = InboundRequest(
        method=good.method,
        path=good.path,
        query_string="",
        headers=good.headers,
        body=good.body.replace(b'"won"', b'"lost"'),
        public_url=good.public_url,
        received_at=good.received_at,
    )
    with pytest.raises(Unauthorized):
        ADAPTER.authenticate(tampered, CONFIG)


@pytest.mark.parametrize(
    "offset", [timedelta(minutes=-6), timedelta(days=-1), timedelta(minutes=6)]
)
def test_stale_or_future_timestamp_is_rejected(offset: timedelta) -> None:
    with pytest.raises(Unauthorized, match="stale"):
        ADAPTER.authenticate(deliver(OPPORTUNITY_WON, sent_at=NOW + offset), CONFIG)


def test_missing_secret_is_unauthorized_with_a_clear_message() -> None:
    with pytest.raises(Unauthorized, match="LEAD_SLA_WEBHOOK_SECRET_CLOSE"):
        ADAPTER.authenticate(deliver(OPPORTUNITY_WON), SourceConfig(secret=None))


def test_secret_that_is_not_hex_is_explained() -> None:
    with pytest.raises(Unauthorized, match="hex"):
        ADAPTER.authenticate(deliver(OPPORTUNITY_WON), SourceConfig(secret="not-hex"))


def test_missing_signature_headers_are_unauthorized() -> None:
    good = deliver(OPPORTUNITY_WON)
    bare = InboundRequest(
        method=good.method,
        path=good.path,
        query_string="",
        headers={"content-type": "application/json"},
        body=good.body,
        public_url=good.public_url,
        received_at=good.received_at,
    )
    with pytest.raises(Unauthorized, match="missing"):
        ADAPTER.authenticate(bare, CONFIG)


# --- leads ----------------------------------------------------------------------------------


def test_lead_created() -> None:
    config = SourceConfig(secret=KEY, options={"owner_field": "cf_owner"})
    (event,) = parse(close_event("lead", "created", LEAD_DATA), config).events
    assert event.type == "lead.created"
    assert event.lead.id == LEAD
    assert event.lead.status == "new"
    assert event.lead.name == "Lowell Bast"
    assert event.lead.owner == "user_RoWq89U2oZOlTTfJScR9pTREnX3AAeNdKnw4YOOcYwG"
    assert event.event_id == "ev_1ntH1vAE4G7DNjNZYkMeck"


def test_lead_status_change_uses_previous_data_for_from() -> None:
    body = close_event(
        "lead",
        "updated",
        {**LEAD_DATA, **QUALIFIED},
        previous={"status_id": LEAD_DATA["status_id"], "status_label": "Potential"},
    )
    (event,) = parse(body).events
    assert event.type == "lead.status_changed"
    assert event.status == StatusChange(to="sql", from_="new")
    assert event.event_id == "ev_1ntH1vAE4G7DNjNZYkMeck:status"


def test_status_map_override_by_label_and_by_id() -> None:
    body = close_event(
        "lead",
        "updated",
        {**LEAD_DATA, **QUALIFIED},
        previous={"status_id": LEAD_DATA["status_id"], "status_label": "Potential"},
    )
    by_label = SourceConfig(secret=KEY, status_map={"qualified": "sal"})
    assert parse(body, by_label).events[0].status == StatusChange(to="sal", from_="new")
    by_id = SourceConfig(secret=KEY, status_map={"stat_qual": "mql", "Qualified": "sal"})
    assert parse(body, by_id).events[0].status == StatusChange(to="mql", from_="new")


def test_unmapped_status_label_is_kept_as_sent() -> None:
    body = close_event(
        "lead",
        "updated",
        {**LEAD_DATA, "status_id": "stat_x", "status_label": "Interested"},
        previous={"status_id": LEAD_DATA["status_id"], "status_label": "Potential"},
    )
    assert parse(body).events[0].status == StatusChange(to="Interested", from_="new")


def test_owner_custom_field_change_is_an_assignment() -> None:
    config = SourceConfig(secret=KEY, options={"owner_field": "custom.cf_owner"})
    body = close_event(
        "lead",
        "updated",
        {**LEAD_DATA, "custom.cf_owner": "user_new"},
        previous={"custom.cf_owner": "user_old"},
    )
    (event,) = parse(body, config).events
    assert event.type == "lead.assigned"
    assert event.owner == OwnerChange(to="user_new", from_="user_old")
    assert parse(body).ignored == 1  # without an owner field configured nothing is used


def test_lead_deleted() -> None:
    (event,) = parse(close_event("lead", "deleted", LEAD_DATA)).events
    assert event.type == "lead.deleted"


def test_lead_status_change_activity_is_used_only_when_chosen() -> None:
    body = close_event(
        "activity.lead_status_change",
        "created",
        {
            "id": "acti_1",
            "lead_id": LEAD,
            "old_status_id": LEAD_DATA["status_id"],
            "old_status_label": "Potential",
            "new_status_id": "stat_qual",
            "new_status_label": "Qualified",
            "user_id": USER,
        },
    )
    assert parse(body).ignored == 1  # the same change arrives as lead `updated`
    config = SourceConfig(secret=KEY, options={"status_from": "activity"})
    (event,) = parse(body, config).events
    assert event.status == StatusChange(to="sql", from_="new")
    lead_updated = close_event(
        "lead", "updated", {**LEAD_DATA, **QUALIFIED}, previous={"status_label": "Potential"}
    )
    assert parse(lead_updated, config).events == []


# --- opportunities and activities -----------------------------------------------------------


def test_opportunity_created_and_lost() -> None:
    created = close_event(
        "opportunity",
        "created",
        {"id": "oppo_1", "lead_id": LEAD, "status_type": "active", "status_label": "Active"},
    )
    assert parse(created).events[0].status == StatusChange(to="opportunity")
    lost = copy.deepcopy(OPPORTUNITY_WON)
    lost["event"]["data"].update(status_type="lost", status_label="Lost", status_id="stat_lost")
    assert parse(lost).events[0].status == StatusChange(to="disqualified", from_="opportunity")
    override = SourceConfig(secret=KEY, status_map={"stat_lost": "recycled"})
    assert parse(lost, override).events[0].status == StatusChange(
        to="recycled", from_="opportunity"
    )


def test_opportunity_value_change_is_ignored() -> None:
    body = copy.deepcopy(OPPORTUNITY_WON)
    body["event"]["changed_fields"] = ["value", "date_updated"]
    assert parse(body).ignored == 1


def test_outbound_call_is_an_activity() -> None:
    data = {
        "id": "acti_call",
        "lead_id": LEAD,
        "user_id": USER,
        "direction": "outbound",
        "disposition": "no-answer",
        "status": "completed",
    }
    (event,) = parse(close_event("activity.call", "created", data)).events
    assert event.type == "lead.activity"
    assert event.lead.id == LEAD
    assert event.activity == Activity(kind="call", outcome="no_answer", by=USER)
    inbound = close_event("activity.call", "created", {**data, "direction": "inbound"})
    assert parse(inbound).ignored == 1


@pytest.mark.parametrize(
    ("object_type", "action", "kind"),
    [
        ("activity.email", "sent", "email"),
        ("activity.sms", "sent", "sms"),
        ("activity.meeting", "completed", "meeting"),
        ("activity.whatsapp_message", "created", "whatsapp"),
    ],
)
def test_contact_activities(object_type: str, action: str, kind: str) -> None:
    data = {"id": "acti_x", "lead_id": LEAD, "user_id": USER, "direction": "outgoing"}
    (event,) = parse(close_event(object_type, action, data)).events
    assert event.activity is not None and event.activity.kind == kind


@pytest.mark.parametrize(
    ("object_type", "action", "direction"),
    [
        ("activity.email", "created", "outgoing"),  # a draft or a scheduled email
        ("activity.email", "created", "incoming"),
        ("activity.sms", "created", "inbound"),
        ("activity.meeting", "scheduled", None),
        ("activity.whatsapp_message", "created", "incoming"),
        ("activity.note", "created", None),
        ("task.lead", "completed", None),
        ("contact", "updated", None),
        ("sequence_subscription", "created", None),
    ],
)
def test_what_is_not_contact_is_counted_not_raised(
    object_type: str, action: str, direction: str | None
) -> None:
    data = {"id": "x", "lead_id": LEAD, "user_id": USER, "direction": direction}
    delivery = parse(close_event(object_type, action, data))
    assert delivery.events == [] and delivery.ignored == 1


def test_event_without_id_or_lead_is_ignored() -> None:
    assert parse(close_event("activity.call", "created", {"id": "a"}, event_id="")).ignored == 1
    orphan = close_event("activity.call", "created", {"id": "a", "lead_id": None}, lead_id=None)
    assert parse(orphan).ignored == 1


# --- retries, ordering, payload errors, self-originated -------------------------------------


def test_redelivery_keeps_the_event_id() -> None:
    first = parse(OPPORTUNITY_WON).events[0]
    again = parse(copy.deepcopy(OPPORTUNITY_WON)).events[0]
    assert first.event_id == again.event_id


def test_deliveries_out_of_order_keep_their_occurred_at() -> None:
    created = close_event("lead", "created", LEAD_DATA, event_id="ev_a")
    updated = close_event(
        "lead",
        "updated",
        {**LEAD_DATA, **QUALIFIED},
        event_id="ev_b",
        previous={"status_label": "Potential"},
        date_created="2026-11-23T14:25:00+00:00",
    )
    events = [*parse(updated).events, *parse(created).events]
    assert [e.occurred_at for e in events] == [
        datetime(2026, 11, 23, 14, 25, tzinfo=UTC),
        datetime(2026, 11, 23, 14, 20, tzinfo=UTC),
    ]
    assert [e.type for e in sort_and_dedupe(events)] == ["lead.created", "lead.status_changed"]


def test_body_that_is_not_json_is_a_bad_payload() -> None:
    with pytest.raises(BadPayload):
        ADAPTER.parse(deliver(b"event=lead.created"), CONFIG)


def test_json_without_an_event_is_a_bad_payload() -> None:
    with pytest.raises(BadPayload):
        ADAPTER.parse(deliver(b'{"subscription_id": "whsub_1"}'), CONFIG)


def test_changes_made_with_our_own_api_key_or_oauth_app_are_flagged() -> None:
    config = SourceConfig(
        secret=KEY, options={"api_key_id": "api_ours", "oauth_client_id": "oa2client_ours"}
    )
    by_key = close_event("lead", "created", LEAD_DATA, api_key_id="api_ours")
    by_app = close_event("lead", "created", LEAD_DATA, oauth_client_id="oa2client_ours")
    by_other = close_event("lead", "created", LEAD_DATA, oauth_client_id="oa2client_zapier")
    assert parse(by_key, config).events[0].self_originated is True
    assert parse(by_app, config).events[0].self_originated is True
    assert parse(by_other, config).events[0].self_originated is False
    assert parse(by_key).events[0].self_originated is False


def test_success_response_is_the_standard_json_answer() -> None:
    assert ADAPTER.success_response(1, 0).body is None
