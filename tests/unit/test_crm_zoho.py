"""Zoho CRM workflow-rule webhook adapter.

Zoho sends what the admin configures on the webhook (Setup > Automation > Actions > Webhooks):
method POST, and a Form-Data (``application/x-www-form-urlencoded``) or raw JSON body whose
values are merge fields of the Leads module, under parameter names the admin picks; custom
parameters (our ``token``) are sent alongside. Standard Lead_Status values and the
``2026-11-23T14:05:00-03:00`` date-time format are those of the Leads module.
https://www.zoho.com/crm/help/automation/webhooks.html
https://www.zoho.com/crm/developer/docs/api/v8/create-webhook.html
https://www.zoho.com/crm/developer/docs/api/v8/get-records.html (API field names, Deluge shape)
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest

from service.crm.base import BadPayload, InboundRequest, InvalidEvents, SourceConfig, Unauthorized
from service.crm.zoho import ADAPTER

SECRET = "b7e4c0d9a1f2e3d4c5b6a7980f1e2d3c"
NOW = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)
LEAD_ID = "4876876000000624001"
OWNER_ID = "4876876000000225013"
FORM = "application/x-www-form-urlencoded"


def record(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "lead_id": LEAD_ID,
        "lead_status": "Not Contacted",
        "owner_id": OWNER_ID,
        "email": "ana@example.com",
        "first_name": "Ana",
        "last_name": "Souza",
        "lead_source": "Web Download",
        "country": "Brazil",
        "modified_time": "2026-11-23T14:05:00-03:00",
        "created_time": "2026-11-20T09:00:00-03:00",
        "modified_by": "4876876000000225013",
        "Company": "Acme",
        "token": SECRET,
    }
    fields.update(changes)
    return {k: v for k, v in fields.items() if v is not None}


def form(**changes: Any) -> bytes:
    return urlencode(record(**changes)).encode()


def request(
    body: bytes, content_type: str | None = FORM, query: str = "", **headers: str
) -> InboundRequest:
    all_headers = {k.replace("_", "-"): v for k, v in headers.items()}
    if content_type:
        all_headers["content-type"] = content_type
    return InboundRequest(
        method="POST",
        path="/webhooks/zoho",
        query_string=query,
        headers=all_headers,
        body=body,
        public_url="https://sla.example.com",
        received_at=NOW,
    )


def config(**kwargs: Any) -> SourceConfig:
    return SourceConfig(secret=kwargs.pop("secret", SECRET), **kwargs)


def parse(body: bytes, cfg: SourceConfig | None = None, **kwargs: Any) -> list[Any]:
    return ADAPTER.parse(request(body, **kwargs), cfg or config()).events


BASE = f"{LEAD_ID}:2026-11-23T17:05:00Z:Not Contacted"


# --- authentication ----------------------------------------------------------------------------


def test_token_as_body_parameter_url_parameter_or_header() -> None:
    ADAPTER.authenticate(request(form()), config())
    no_token = form(token=None)
    ADAPTER.authenticate(request(no_token, query=f"token={SECRET}"), config())
    ADAPTER.authenticate(request(no_token, zoho_webhook_token=SECRET), config())
    raw = json.dumps(record()).encode()
    ADAPTER.authenticate(request(raw, "application/json"), config())


@pytest.mark.parametrize(
    ("body", "query", "headers"),
    [
        (form(token="wrong"), "", {}),
        (form(token=None), "token=wrong", {}),
        (form(token=None), "", {"zoho_webhook_token": SECRET + "x"}),
    ],
)
def test_wrong_token_is_unauthorized(body: bytes, query: str, headers: dict[str, str]) -> None:
    with pytest.raises(Unauthorized, match="does not match"):
        ADAPTER.authenticate(request(body, query=query, **headers), config())


def test_missing_token_is_unauthorized() -> None:
    with pytest.raises(Unauthorized, match="no token"):
        ADAPTER.authenticate(request(form(token=None)), config())


def test_missing_secret_says_none_is_configured() -> None:
    with pytest.raises(Unauthorized, match="no secret is configured"):
        ADAPTER.authenticate(request(form()), SourceConfig(secret=None))


def test_an_unparseable_body_still_authenticates_by_header_and_fails_in_parse() -> None:
    body = b"{broken json"
    ADAPTER.authenticate(request(body, "application/json", zoho_webhook_token=SECRET), config())
    with pytest.raises(BadPayload):
        ADAPTER.parse(request(body, "application/json"), config())


# --- parsing -----------------------------------------------------------------------------------


def test_form_encoded_record_becomes_status_and_owner_events() -> None:
    events = {e.event_id: e for e in parse(form())}
    assert set(events) == {f"{BASE}:status", f"{BASE}:owner"}
    status = events[f"{BASE}:status"]
    assert status.type == "lead.status_changed"
    assert status.status.to == "mql"
    assert status.occurred_at == datetime(2026, 11, 23, 17, 5, tzinfo=UTC)
    lead = status.lead
    assert lead.id == LEAD_ID
    assert lead.status == "mql"
    assert lead.owner == OWNER_ID
    assert lead.email == "ana@example.com"
    assert lead.name == "Ana Souza"
    assert lead.source == "Web Download"
    assert lead.country == "Brazil"
    assert lead.attributes == {"Company": "Acme", "crm_status": "Not Contacted"}
    owner = events[f"{BASE}:owner"]
    assert owner.type == "lead.assigned"
    assert owner.owner.to == OWNER_ID
    assert owner.lead.status is None


def test_raw_json_record_parses_the_same_way() -> None:
    raw = json.dumps(record()).encode()
    from_json = {(e.event_id, e.type, e.occurred_at) for e in parse(raw, content_type=None)}
    from_form = {(e.event_id, e.type, e.occurred_at) for e in parse(form())}
    assert from_json == from_form


def test_record_in_zoho_api_shape() -> None:
    api = {
        "data": [
            {
                "id": LEAD_ID,
                "Lead_Status": "Contacted",
                "Owner": {"name": "Rep Seven", "id": OWNER_ID, "email": "rep7@example.com"},
                "Email": "ana@example.com",
                "Full_Name": "Ana Souza",
                "Modified_Time": "2026-11-23T14:05:00-03:00",
                "Created_Time": "2026-11-20T09:00:00-03:00",
                "Lead_Source": "Advertisement",
            }
        ]
    }
    events = parse(json.dumps(api).encode(), content_type="application/json")
    status = next(e for e in events if e.type == "lead.status_changed")
    assert status.status.to == "sal"
    assert status.lead.owner == OWNER_ID
    assert status.lead.name == "Ana Souza"
    activity = next(e for e in events if e.type == "lead.activity")
    assert (activity.activity.kind, activity.activity.outcome) == ("call", "connected")


def test_contact_attempts_are_also_activities_after_the_status() -> None:
    events = sorted(parse(form(lead_status="Attempted to Contact")), key=lambda e: e.order_key)
    assert [e.type for e in events] == ["lead.assigned", "lead.status_changed", "lead.activity"]
    assert events[1].status.to == "sal"
    assert events[2].activity.kind == "call"
    assert events[2].activity.outcome == "no_answer"
    assert events[2].activity.by == OWNER_ID
    quiet = config(options={"activity_statuses": {}})
    assert "lead.activity" not in {e.type for e in parse(form(lead_status="Contacted"), quiet)}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Not Contacted", "mql"),
        ("Contacted", "sal"),
        ("Contact in Future", "recycled"),
        ("Pre-Qualified", "sql"),
        ("Junk Lead", "disqualified"),
        ("Lost Lead", "disqualified"),
        ("Not Qualified", "disqualified"),
        ("Our Own Value", "Our Own Value"),
    ],
)
def test_default_status_map(value: str, expected: str) -> None:
    changes = [e.status for e in parse(form(lead_status=value)) if e.status]
    assert [c.to for c in changes] == [expected]
    if expected == "disqualified":
        assert changes[0].reason == value


def test_none_status_sends_no_status() -> None:
    events = parse(form(lead_status="-None-"))
    assert [e.type for e in events] == ["lead.assigned"]


def test_redelivery_and_a_second_rule_on_the_same_edit_repeat_ids() -> None:
    first = [e.event_id for e in parse(form())]
    second_rule = [e.event_id for e in parse(form(event="owner_changed"))]
    raw = [e.event_id for e in parse(json.dumps(record()).encode(), content_type=None)]
    assert first == second_rule == raw
    later = [e.event_id for e in parse(form(modified_time="2026-11-23T14:06:00-03:00"))]
    assert set(later).isdisjoint(first)


def test_deliveries_and_batches_out_of_order_keep_their_own_times() -> None:
    late = record(lead_id="1", modified_time="2026-11-23T15:00:00Z")
    early = record(lead_id="2", modified_time="2026-11-23T09:30:00-03:00")
    events = parse(json.dumps([late, early]).encode(), content_type="application/json")
    times = {e.lead.id: e.occurred_at for e in events if e.type == "lead.status_changed"}
    assert times == {
        "1": datetime(2026, 11, 23, 15, 0, tzinfo=UTC),
        "2": datetime(2026, 11, 23, 12, 30, tzinfo=UTC),
    }
    # one request per record, the later edit arriving first
    second = parse(form(modified_time="2026-11-23T16:00:00-03:00", lead_status="Contacted"))
    first = parse(form())
    assert {e.occurred_at for e in second} == {datetime(2026, 11, 23, 19, 0, tzinfo=UTC)}
    assert {e.occurred_at for e in first} == {datetime(2026, 11, 23, 17, 5, tzinfo=UTC)}


def test_status_map_and_field_map_overrides() -> None:
    cfg = config(
        status_map={"Not Contacted": "new", "Hot Inbound": "mql"},
        options={"field_map": {"id": "LEADID", "status": "status", "team": "territory"}},
    )
    body = urlencode(
        {
            "LEADID": "99",
            "status": "Hot Inbound",
            "modified_time": "2026-11-23T14:05:00-03:00",
            "territory": "emea",
        }
    ).encode()
    events = parse(body, cfg)
    assert [(e.lead.id, e.status.to, e.lead.team) for e in events] == [("99", "mql", "emea")]
    statuses_only = config(status_map={"Not Contacted": "new"})
    assert [e.status.to for e in parse(form(), statuses_only) if e.status] == ["new"]


def test_naive_times_are_read_in_the_configured_timezone() -> None:
    cfg = config(options={"timezone": "America/Sao_Paulo"})
    events = parse(form(modified_time="2026-11-23 14:05:00"), cfg)
    assert {e.occurred_at for e in events} == {datetime(2026, 11, 23, 17, 5, tzinfo=UTC)}
    custom = config(options={"datetime_format": "%d/%m/%Y %H:%M", "timezone": "Asia/Kolkata"})
    events = parse(form(modified_time="23/11/2026 22:35"), custom)
    assert {e.occurred_at for e in events} == {datetime(2026, 11, 23, 17, 5, tzinfo=UTC)}


def test_creation_deletion_and_self_originated_changes() -> None:
    created = parse(form(created_time="2026-11-23T14:05:00-03:00"))
    assert f"{LEAD_ID}:created" in {e.event_id for e in created}
    deleted = parse(form(event="deleted"))
    assert [(e.event_id, e.type) for e in deleted] == [(f"{LEAD_ID}:deleted", "lead.deleted")]
    ours = config(options={"self_user_ids": ["4876876000000225013"]})
    assert all(e.self_originated for e in parse(form(), ours))
    assert not any(e.self_originated for e in parse(form(modified_by="someone-else"), ours))


def test_unknown_content_is_ignored_or_kept_as_attributes() -> None:
    contact = record(module="Contacts")
    lead = record(module="Leads", Unknown_Field="x", Another="y")
    delivery = ADAPTER.parse(
        request(json.dumps([contact, lead, "junk"]).encode(), "application/json"), config()
    )
    assert delivery.ignored == 2
    attributes = delivery.events[0].lead.attributes
    assert attributes["Unknown_Field"] == "x"
    assert "token" not in attributes  # the secret never lands in stored lead data


def test_missing_required_fields_are_invalid_events() -> None:
    with pytest.raises(InvalidEvents) as missing_id:
        ADAPTER.parse(request(form(lead_id=None)), config())
    assert [e.field for e in missing_id.value.errors] == ["lead_id"]
    with pytest.raises(InvalidEvents) as missing_time:
        ADAPTER.parse(request(form(modified_time=None)), config())
    assert [e.field for e in missing_time.value.errors] == ["modified_time"]
    with pytest.raises(InvalidEvents) as unreadable:
        ADAPTER.parse(request(form(modified_time="yesterday")), config())
    assert "unreadable" in unreadable.value.errors[0].message


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"[1, 2", None),
        (b"just some text", None),
        (b"\xff\xfe\x00", FORM),
        (b'"a string"', "application/json"),
    ],
)
def test_malformed_body_is_bad_payload(body: bytes, content_type: str | None) -> None:
    with pytest.raises(BadPayload):
        ADAPTER.parse(request(body, content_type), config())
