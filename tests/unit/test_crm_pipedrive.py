"""Pipedrive adapter: HTTP Basic auth, webhooks v2 and v1 bodies.

v2 bodies are the examples of https://pipedrive.readme.io/docs/webhooks-v2-migration-guide
("Webhooks v2 examples"); the v1 body follows the format of
https://pipedrive.readme.io/docs/guide-for-webhooks ("Webhook format").
"""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from service.crm.base import BadPayload, InboundRequest, ParsedDelivery, SourceConfig, Unauthorized
from service.crm.pipedrive import ADAPTER
from service.sla.types import Activity, OwnerChange, StatusChange, sort_and_dedupe

SECRET = "lead-sla:s3cr3t:with-colon"
CONFIG = SourceConfig(secret=SECRET)
NOW = datetime(2026, 11, 23, 17, 0, tzinfo=UTC)


def _meta(
    action: str, entity: str, entity_id: str, event_id: str, timestamp: Any
) -> dict[str, Any]:
    return {
        "action": action,
        "company_id": "8087566",
        "correlation_id": "a5ad2ea2-1279-413a-9ba6-34671edf5fe3",
        "entity_id": entity_id,
        "entity": entity,
        "id": event_id,
        "is_bulk_edit": False,
        "timestamp": timestamp,
        "type": "general",
        "user_id": "12415231",
        "version": "2.0",
        "webhook_id": "4710827",
        "webhook_owner_id": "12094821",
        "change_source": "app",
        "attempt": 1,
        "host": "pd-us.pipedrive.com",
    }


# "Create deal", verbatim from the migration guide.
CREATE_DEAL: dict[str, Any] = {
    "data": {
        "add_time": "2022-11-24T13:18:55Z",
        "channel": None,
        "channel_id": None,
        "close_time": None,
        "creator_user_id": 12415231,
        "currency": "EUR",
        "custom_fields": {},
        "expected_close_date": None,
        "first_won_time": None,
        "id": 8,
        "label_ids": [],
        "lost_reason": None,
        "lost_time": None,
        "org_id": 1,
        "origin": "ManuallyCreated",
        "origin_id": None,
        "owner_id": 12415231,
        "person_id": 8,
        "pipeline_id": 1,
        "probability": None,
        "stage_change_time": None,
        "stage_id": 2,
        "status": "open",
        "title": "Sample Org deal",
        "update_time": None,
        "value": 100,
        "visible_to": "3",
        "won_time": None,
    },
    "previous": None,
    "meta": _meta(
        "create", "deal", "8", "71825ee0-0054-4267-b5fd-d28b7a414212", "2022-11-24T13:18:56.089Z"
    ),
}

# "Update deal", verbatim: only a custom field changed.
UPDATE_DEAL_CUSTOM_FIELD: dict[str, Any] = {
    "data": {
        **CREATE_DEAL["data"],
        "custom_fields": {
            "3d0fa3429dfa2d3dec265b4fc5dc8258ab66cdf3": {
                "country": "Estonia",
                "formatted_address": "Tallinn, Estonia",
                "locality": "Tallinn",
                "sublocality": "",
                "type": "address",
                "subpremise": "",
                "route": "",
                "street_number": "",
                "admin_area_level_1": "Harju County",
                "admin_area_level_2": "",
                "postal_code": "",
                "value": "Tallinn, Estonia",
            }
        },
        "label_ids": [24, 25],
        "update_time": "2022-11-24T15:11:55Z",
    },
    "previous": {"custom_fields": {"3d0fa3429dfa2d3dec265b4fc5dc8258ab66cdf3": None}},
    "meta": _meta(
        "change", "deal", "8", "df47d877-b58c-4886-91cd-1aa83e1d7366", "2022-11-24T15:11:55.724Z"
    ),
}

# "Create lead", verbatim.
CREATE_LEAD: dict[str, Any] = {
    "data": {
        "add_time": "2022-11-24T15:35:58.675Z",
        "channel": None,
        "channel_id": None,
        "creator_id": 12415231,
        "custom_fields": {},
        "expected_close_date": None,
        "id": "b1810230-6c0d-11ed-9826-a53d0eb706a5",
        "is_archived": False,
        "label_ids": [
            "134b4de7-dcbc-46ae-b8f2-2eb328eebfe8",
            "4a5149be-a279-4be3-b62d-48eef2be5824",
        ],
        "next_activity_id": None,
        "organization_id": 2,
        "origin": "ManuallyCreated",
        "origin_id": None,
        "owner_id": 12415231,
        "person_id": 11,
        "source_name": "Manually created",
        "title": "Lead Org lead",
        "update_time": "2022-11-24T15:35:58.675Z",
        "was_seen": True,
        "value": {"amount": 300, "currency": "EUR"},
    },
    "previous": None,
    "meta": _meta(
        "create",
        "lead",
        "b1810230-6c0d-11ed-9826-a53d0eb706a5",
        "b18fa830-6c0d-11ed-9826-a53d0eb706a5",
        "2022-11-24T15:35:58.772Z",
    ),
}

# "Delete lead", verbatim: `data` is null and `previous` holds the last state.
DELETE_LEAD: dict[str, Any] = {
    "data": None,
    "previous": {**CREATE_LEAD["data"], "update_time": "2022-11-24T15:37:20.386Z"},
    "meta": _meta(
        "delete",
        "lead",
        "b1810230-6c0d-11ed-9826-a53d0eb706a5",
        "f6902590-6c0d-11ed-b671-e5d3563ddafd",
        "2022-11-24T15:37:54.538Z",
    ),
}

# "Create person" and "Update person", verbatim.
CREATE_PERSON: dict[str, Any] = {
    "data": {
        "add_time": "2022-11-24T13:18:55Z",
        "custom_fields": {},
        "emails": [],
        "first_name": "Sample",
        "id": 8,
        "label": None,
        "last_name": None,
        "name": "Sample",
        "org_id": 1,
        "owner_id": 12415231,
        "phones": [],
        "update_time": "2022-11-24T13:18:55Z",
        "visible_to": "3",
    },
    "previous": None,
    "meta": _meta(
        "create", "person", "8", "5359a602-6d1b-4562-a385-ccaa762bd722", "2022-11-24T13:18:55.665Z"
    ),
}
UPDATE_PERSON: dict[str, Any] = {
    "data": {
        **CREATE_PERSON["data"],
        "first_name": "Sample Person",
        "name": "Sample Person",
        "update_time": "2022-11-24T15:18:35Z",
    },
    "previous": {"first_name": "Sample", "name": "Sample"},
    "meta": _meta(
        "change", "person", "8", "7c812ffd-8f50-45ea-a597-b8fcba2da9c0", "2022-11-24T15:18:35.616Z"
    ),
}

# "Create activity", verbatim (a meeting planned, not done).
CREATE_ACTIVITY: dict[str, Any] = {
    "data": {
        "active_flag": True,
        "add_time": "2022-11-24T15:25:44Z",
        "busy_flag": None,
        "custom_fields": {},
        "deal_id": 10,
        "done": False,
        "due_date": "2022-11-24",
        "due_time": None,
        "duration": None,
        "id": 2,
        "lead_id": None,
        "location": None,
        "org_id": None,
        "owner_id": 12415231,
        "person_id": 10,
        "public_description": "",
        "subject": "Call with friends",
        "type": "meeting",
        "update_time": "2022-11-24T15:25:44Z",
        "update_user_id": None,
    },
    "previous": None,
    "meta": _meta(
        "create",
        "activity",
        "2",
        "bbba59e9-1d1f-4794-9472-72540d421386",
        "2022-11-24T15:25:44.461Z",
    ),
}

# Webhooks v1 "updated.deal", in the documented v1 format.
V1_UPDATED_DEAL: dict[str, Any] = {
    "v": 1,
    "matches_filters": {"current": [], "previous": []},
    "meta": {
        "v": 1,
        "action": "updated",
        "object": "deal",
        "change_source": "app",
        "id": 8,
        "company_id": 8087566,
        "user_id": 12415231,
        "host": "company.pipedrive.com",
        "timestamp": 1795443600,
        "timestamp_micro": 1795443600384700,
        "permitted_user_ids": [12415231],
        "trans_pending": False,
        "is_bulk_update": False,
        "pipedrive_service_name": False,
        "matches_filters": {"current": [], "previous": []},
        "webhook_id": 4710827,
    },
    "retry": 0,
    "current": {"id": 8, "title": "Sample Org deal", "stage_id": 3, "status": "open", "user_id": 7},
    "previous": {
        "id": 8,
        "title": "Sample Org deal",
        "stage_id": 2,
        "status": "open",
        "user_id": 7,
    },
    "event": "updated.deal",
}


def deliver(
    body: dict[str, Any] | bytes,
    *,
    credentials: str | None = SECRET,
    authorization: str | None = None,
) -> InboundRequest:
    headers = {"content-type": "application/json"}
    if authorization is not None:
        headers["authorization"] = authorization
    elif credentials is not None:
        headers["authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    return InboundRequest(
        method="POST",
        path="/webhooks/pipedrive",
        query_string="",
        headers=headers,
        body=body if isinstance(body, bytes) else json.dumps(body).encode(),
        public_url="https://sla.example.com",
        received_at=NOW,
    )


def parse(body: dict[str, Any], config: SourceConfig = CONFIG) -> ParsedDelivery:
    return ADAPTER.parse(deliver(body), config)


def changed(
    base: dict[str, Any], event_id: str, data: dict[str, Any], previous: dict[str, Any]
) -> dict[str, Any]:
    """A documented example turned into a `change` of the given fields."""
    body = copy.deepcopy(base)
    body["data"] = {**body["data"], **data}
    body["previous"] = previous
    body["meta"]["action"] = "change"
    body["meta"]["id"] = event_id
    return body


# --- authentication -------------------------------------------------------------------------


def test_valid_basic_credentials_authenticate() -> None:
    ADAPTER.authenticate(deliver(CREATE_DEAL), CONFIG)


def test_basic_scheme_is_case_insensitive() -> None:
    token = base64.b64encode(SECRET.encode()).decode()
    ADAPTER.authenticate(deliver(CREATE_DEAL, authorization=f"basic {token}"), CONFIG)


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic " + base64.b64encode(b"lead-sla:wrong").decode(),
        "Basic " + base64.b64encode(b"someone:s3cr3t:with-colon").decode(),
        "Bearer " + base64.b64encode(SECRET.encode()).decode(),
        "Basic not base64!",
        "Basic ",
    ],
)
def test_wrong_or_malformed_credentials_are_rejected(authorization: str) -> None:
    with pytest.raises(Unauthorized):
        ADAPTER.authenticate(deliver(CREATE_DEAL, authorization=authorization), CONFIG)


def test_missing_credentials_are_rejected() -> None:
    with pytest.raises(Unauthorized, match="HTTP Basic"):
        ADAPTER.authenticate(deliver(CREATE_DEAL, credentials=None), CONFIG)


def test_missing_secret_is_unauthorized_with_a_clear_message() -> None:
    with pytest.raises(Unauthorized, match="LEAD_SLA_WEBHOOK_SECRET_PIPEDRIVE"):
        ADAPTER.authenticate(deliver(CREATE_DEAL), SourceConfig(secret=None))


def test_secret_that_is_not_user_colon_password_is_explained() -> None:
    with pytest.raises(Unauthorized, match="user:password"):
        ADAPTER.authenticate(deliver(CREATE_DEAL), SourceConfig(secret="just-a-token"))


# --- v2 -------------------------------------------------------------------------------------


def test_documented_create_deal_is_a_created_lead() -> None:
    config = SourceConfig(secret=SECRET, options={"stage_map": {2: "mql"}})
    (event,) = parse(CREATE_DEAL, config).events
    assert event.type == "lead.created"
    assert event.event_id == "71825ee0-0054-4267-b5fd-d28b7a414212"
    assert event.lead.id == "deal:8"
    assert event.lead.status == "mql"
    assert event.lead.owner == "12415231"
    assert event.occurred_at == datetime(2022, 11, 24, 13, 18, 56, 89000, tzinfo=UTC)


def test_unmapped_stage_is_kept_as_sent() -> None:
    (event,) = parse(CREATE_DEAL).events
    assert event.lead.status == "2"


def test_documented_create_lead_uses_the_lead_uuid_and_label_map() -> None:
    labels = {"label_map": {"134b4de7-dcbc-46ae-b8f2-2eb328eebfe8": "mql"}}
    (event,) = parse(CREATE_LEAD, SourceConfig(secret=SECRET, options=labels)).events
    assert event.lead.id == "b1810230-6c0d-11ed-9826-a53d0eb706a5"
    assert event.lead.status == "mql"
    (unlabelled,) = parse(CREATE_LEAD).events
    assert unlabelled.lead.status is None  # labels are tags unless mapped


def test_documented_delete_lead_is_a_deleted_lead() -> None:
    (event,) = parse(DELETE_LEAD).events
    assert event.type == "lead.deleted"
    assert event.lead.id == "b1810230-6c0d-11ed-9826-a53d0eb706a5"


def test_documented_person_create_and_update() -> None:
    (created,) = parse(CREATE_PERSON).events
    assert created.type == "lead.created"
    assert created.lead.id == "person:8"
    assert created.lead.name == "Sample"
    (updated,) = parse(UPDATE_PERSON).events
    assert updated.type == "lead.updated"
    assert updated.lead.name == "Sample Person"
    assert updated.event_id == "7c812ffd-8f50-45ea-a597-b8fcba2da9c0:updated"


def test_person_primary_email() -> None:
    body = copy.deepcopy(CREATE_PERSON)
    body["data"]["emails"] = [
        {"label": "home", "value": "ana@home.example", "primary": False},
        {"label": "work", "value": "ana@example.com", "primary": True},
    ]
    (event,) = parse(body).events
    assert event.lead.email == "ana@example.com"


def test_documented_custom_field_update_is_ignored() -> None:
    delivery = parse(UPDATE_DEAL_CUSTOM_FIELD)
    assert delivery.events == []
    assert delivery.ignored == 1


def test_stage_change_maps_through_stage_map_with_from() -> None:
    body = changed(CREATE_DEAL, "e1", {"stage_id": 3}, {"stage_id": 2, "update_time": None})
    config = SourceConfig(secret=SECRET, options={"stage_map": {2: "mql", 3: "sal"}})
    (event,) = parse(body, config).events
    assert event.type == "lead.status_changed"
    assert event.status == StatusChange(to="sal", from_="mql")
    assert event.event_id == "e1:status"


def test_stage_move_within_one_status_is_not_a_status_change() -> None:
    body = changed(CREATE_DEAL, "e1", {"stage_id": 3}, {"stage_id": 2})
    config = SourceConfig(secret=SECRET, options={"stage_map": {"2": "sql", "3": "sql"}})
    assert parse(body, config).events == []


def test_won_and_lost_deals() -> None:
    won = changed(CREATE_DEAL, "e1", {"status": "won"}, {"status": "open", "won_time": None})
    config = SourceConfig(secret=SECRET, options={"stage_map": {"2": "opportunity"}})
    (event,) = parse(won, config).events
    assert event.status == StatusChange(to="customer", from_="opportunity")
    lost = changed(
        CREATE_DEAL, "e2", {"status": "lost", "lost_reason": "No budget"}, {"status": "open"}
    )
    (event,) = parse(lost, config).events
    assert event.status == StatusChange(to="disqualified", from_="opportunity", reason="No budget")


def test_status_map_override_from_config_wins() -> None:
    won = changed(CREATE_DEAL, "e1", {"status": "won"}, {"status": "open"})
    config = SourceConfig(secret=SECRET, status_map={"won": "sql", "2": "mql"})
    (event,) = parse(won, config).events
    assert event.status == StatusChange(to="sql", from_="mql")


def test_lead_label_change_is_a_status_change() -> None:
    mql, sal = "134b4de7-dcbc-46ae-b8f2-2eb328eebfe8", "9c1f3f0e-0000-4000-8000-000000000001"
    body = changed(CREATE_LEAD, "e9", {"label_ids": [mql, sal]}, {"label_ids": [mql]})
    config = SourceConfig(secret=SECRET, options={"label_map": {mql: "mql", sal: "sal"}})
    (event,) = parse(body, config).events
    assert event.lead.id == "b1810230-6c0d-11ed-9826-a53d0eb706a5"
    assert event.status == StatusChange(to="sal", from_="mql")


def test_owner_change_is_an_assignment_with_from() -> None:
    body = changed(CREATE_DEAL, "e3", {"owner_id": 555}, {"owner_id": 12415231})
    (event,) = parse(body).events
    assert event.type == "lead.assigned"
    assert event.owner == OwnerChange(to="555", from_="12415231")
    assert event.event_id == "e3:owner"


def test_one_change_can_yield_status_and_assignment() -> None:
    body = changed(
        CREATE_DEAL, "e4", {"stage_id": 3, "owner_id": 9}, {"stage_id": 2, "owner_id": 1}
    )
    events = parse(body, SourceConfig(secret=SECRET, options={"stage_map": {"3": "sal"}})).events
    assert [e.type for e in events] == ["lead.status_changed", "lead.assigned"]
    assert len({e.event_id for e in events}) == 2


# --- activities -----------------------------------------------------------------------------


def test_documented_planned_activity_is_not_contact() -> None:
    delivery = parse(CREATE_ACTIVITY)
    assert delivery.events == [] and delivery.ignored == 1


def test_done_activity_lands_on_the_deal_before_the_person() -> None:
    body = copy.deepcopy(CREATE_ACTIVITY)
    body["data"].update(done=True, type="call")
    (event,) = parse(body).events
    assert event.type == "lead.activity"
    assert event.lead.id == "deal:10"
    assert event.activity == Activity(kind="call", by="12415231")
    assert event.event_id == "activity:2:done"
    by_person = SourceConfig(secret=SECRET, options={"activity_link_order": ["person", "deal"]})
    (event,) = parse(body, by_person).events
    assert event.lead.id == "person:10"


def test_activity_on_a_pipedrive_lead_uses_the_lead_uuid() -> None:
    body = copy.deepcopy(CREATE_ACTIVITY)
    body["data"].update(done=True, type="email", lead_id="b1810230-6c0d-11ed-9826-a53d0eb706a5")
    (event,) = parse(body).events
    assert event.lead.id == "b1810230-6c0d-11ed-9826-a53d0eb706a5"
    assert event.activity is not None and event.activity.kind == "email"


def test_marking_an_activity_done_counts_once() -> None:
    done = changed(CREATE_ACTIVITY, "e5", {"done": True}, {"done": False})
    (event,) = parse(done).events
    assert event.activity is not None and event.activity.kind == "meeting"
    again = changed(CREATE_ACTIVITY, "e6", {"done": True}, {"done": False})
    assert parse(again).events[0].event_id == event.event_id
    renamed = changed(CREATE_ACTIVITY, "e7", {"done": True, "subject": "x"}, {"subject": "y"})
    assert parse(renamed).events == []


def test_other_activity_types_are_ignored_unless_configured() -> None:
    body = copy.deepcopy(CREATE_ACTIVITY)
    body["data"].update(done=True, type="whatsapp_chat")
    assert parse(body).ignored == 1
    config = SourceConfig(secret=SECRET, options={"activity_types": {"whatsapp_chat": "whatsapp"}})
    (event,) = parse(body, config).events
    assert event.activity is not None and event.activity.kind == "whatsapp"


# --- v1, retries, ordering ------------------------------------------------------------------


def test_v1_updated_deal() -> None:
    config = SourceConfig(secret=SECRET, options={"stage_map": {"2": "mql", "3": "sql"}})
    (event,) = parse(V1_UPDATED_DEAL, config).events
    assert event.type == "lead.status_changed"
    assert event.lead.id == "deal:8"
    assert event.status == StatusChange(to="sql", from_="mql")
    assert event.occurred_at == datetime(2026, 11, 23, 14, 20, 0, 384700, tzinfo=UTC)
    retried = copy.deepcopy(V1_UPDATED_DEAL)
    retried["retry"] = 2
    assert parse(retried, config).events[0].event_id == event.event_id


def test_v1_owner_in_user_id() -> None:
    body = copy.deepcopy(V1_UPDATED_DEAL)
    body["current"]["stage_id"] = 2
    body["current"]["user_id"] = {"id": 9, "name": "Rep", "value": 9}
    (event,) = parse(body).events
    assert event.owner == OwnerChange(to="9", from_="7")


def test_redelivery_with_a_new_attempt_keeps_the_event_id() -> None:
    retried = copy.deepcopy(CREATE_DEAL)
    retried["meta"]["attempt"] = 3
    assert parse(retried).events[0].event_id == parse(CREATE_DEAL).events[0].event_id


def test_epoch_timestamps_are_understood() -> None:
    body = copy.deepcopy(CREATE_DEAL)
    body["meta"]["timestamp"] = 1669304389  # as in the documented `user` events
    assert parse(body).events[0].occurred_at == datetime(2022, 11, 24, 15, 39, 49, tzinfo=UTC)


def test_deliveries_out_of_order_keep_their_occurred_at() -> None:
    config = SourceConfig(secret=SECRET, options={"stage_map": {"2": "mql", "3": "sal"}})
    later = changed(CREATE_DEAL, "e2", {"stage_id": 3}, {"stage_id": 2})
    later["meta"]["timestamp"] = "2022-11-24T14:00:00.000Z"
    events = [*parse(later, config).events, *parse(CREATE_DEAL, config).events]
    ordered = sort_and_dedupe(events)
    assert [e.type for e in ordered] == ["lead.created", "lead.status_changed"]
    assert ordered[1].occurred_at == datetime(2022, 11, 24, 14, 0, tzinfo=UTC)


# --- what is not used -----------------------------------------------------------------------


@pytest.mark.parametrize("entity", ["note", "organization", "product", "stage", "user"])
def test_other_entities_are_counted_not_raised(entity: str) -> None:
    body = copy.deepcopy(CREATE_PERSON)
    body["meta"]["entity"] = entity
    delivery = parse(body)
    assert delivery.events == [] and delivery.ignored == 1


def test_untracked_entity_is_ignored() -> None:
    config = SourceConfig(secret=SECRET, options={"entities": ["lead"]})
    assert parse(CREATE_DEAL, config).ignored == 1


@pytest.mark.parametrize(
    ("part", "field", "value"),
    [
        ("meta", "action", "archive"),
        ("meta", "timestamp", "not a time"),
        ("meta", "id", None),
        (None, "data", "oops"),
    ],
)
def test_unknown_action_and_broken_meta_are_ignored(
    part: str | None, field: str, value: Any
) -> None:
    body = copy.deepcopy(CREATE_DEAL)
    target = body[part] if part else body
    target[field] = value
    delivery = parse(body)
    assert delivery.events == [] and delivery.ignored == 1


def test_body_that_is_not_json_is_a_bad_payload() -> None:
    with pytest.raises(BadPayload):
        ADAPTER.parse(deliver(b"meta=1&action=create"), CONFIG)


def test_json_without_meta_is_a_bad_payload() -> None:
    with pytest.raises(BadPayload):
        ADAPTER.parse(deliver(b"[1, 2, 3]"), CONFIG)


def test_changes_made_by_our_own_api_user_are_flagged() -> None:
    config = SourceConfig(secret=SECRET, options={"api_user_id": 12415231})
    body = copy.deepcopy(UPDATE_PERSON)
    body["meta"]["change_source"] = "api"
    assert parse(body, config).events[0].self_originated is True
    body["meta"]["user_id"] = "999"
    assert parse(body, config).events[0].self_originated is False
    assert parse(UPDATE_PERSON, config).events[0].self_originated is False  # made in the app


def test_success_response_is_the_standard_json_answer() -> None:
    assert ADAPTER.success_response(1, 0).body is None
