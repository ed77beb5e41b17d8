"""RD Station Marketing and CRM webhooks adapter.

Bodies follow RD Station's published payloads:
* integration-screen ("API 1.x") lead payload, ``{"leads": [...]}``:
  https://developers.rdstation.com/docs/como-migrar-webhooks
* Webhooks API contact payload (``event_type``/``event_timestamp``/``contact``):
  https://developers.rdstation.com/reference/webhooks-payload-copy
* CRM deal payload (``event_name``/``document``):
  https://developers.rdstation.com/reference/webhooks-payload-crm
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from service.crm.base import BadPayload, InboundRequest, SourceConfig, Unauthorized
from service.crm.rdstation import ADAPTER

SECRET = "9f2c1e7a5b3d4c6e8f0a1b2c3d4e5f60"
NOW = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)
UUID = "c2f3d2b3-7250-4d27-97f4-eef38be32f7f"

LEGACY_LEAD: dict[str, Any] = {
    "id": "1",
    "uuid": UUID,
    "email": "lead@example.com",
    "name": "Lead Name",
    "company": "Company Name",
    "job_title": "Job",
    "bio": "This is my bio",
    "created_at": "2012-06-04T15:31:35-03:00",
    "opportunity": "false",
    "number_conversions": "3",
    "user": "owner@example.com",
    "first_conversion": {
        "content": {
            "identificador": "ebook-abc",
            "nome": "Lead Name",
            "email_lead": "lead@example.com",
            "telefone": "99999999",
            "empresa": "Company Name",
            "cargo": "IT",
        },
        "created_at": "2012-06-04T15:31:35-03:00",
        "cumulative_sum": "1",
        "source": "source 1",
        "conversion_origin": {
            "source": "source 1",
            "medium": "medium 1",
            "value": "value 1",
            "campaign": "campaign 1",
            "channel": "channel 1",
        },
    },
    "last_conversion": {
        "content": {"identificador": "webinar-abc", "email_lead": "lead@example.com"},
        "created_at": "2012-06-05T10:12:00-03:00",
        "cumulative_sum": "2",
        "source": "source 2",
    },
    "custom_fields": {"cf_segmento": "saude"},
    "website": "http://www.mywebsite.com",
    "personal_phone": "48 999999999",
    "mobile_phone": "48 999999999",
    "city": "Florianópolis",
    "state": "SC",
    "lead_stage": "Lead",
    "tags": ["tag 1", "tag 2"],
    "fit_score": "d",
    "interest": 0,
}

CONTACT_EVENT: dict[str, Any] = {
    "event_type": "WEBHOOK.CONVERTED",
    "entity_type": "CONTACT",
    "event_identifier": "my-event-identifier",
    "timestamp": "2018-03-13T14:09:02.724-03:00",
    "event_timestamp": "2018-03-13T14:07:04.254-03:00",
    "contact": {
        "uuid": UUID,
        "email": "contact@example.com",
        "name": "Contact Name",
        "job_title": "Developer",
        "bio": "This is my bio",
        "website": "http://rdstation.com.br",
        "personal_phone": "48 30252598",
        "mobile_phone": "48 30252598",
        "city": "Florianópolis",
        "facebook": "Contact Facebook",
        "linkedin": "Contact Linkedin",
        "twitter": "Contact Twitter",
        "tags": ["tag 1", "tag 2"],
        "cf_custom_field_example": ["Option1", "Option2"],
        "legal_bases": [{"category": "communications", "type": "consent", "status": "granted"}],
        "company": {"name": "Company Example 0"},
        "funnel": {
            "name": "default",
            "lifecycle_stage": "Lead",
            "opportunity": False,
            "contact_owner_email": "owner@example.com",
            "interest": 20,
            "fit": 0,
            "origin": "Busca Paga | Google",
        },
    },
}

DEAL_EVENT: dict[str, Any] = {
    "event_name": "crm_deal_updated",
    "document": {
        "id": "650878567482d9c0c7002050a475",
        "name": "Teste Negociação",
        "amount_monthly": 0.0,
        "amount_unique": 0.0,
        "amount_total": 0.0,
        "prediction_date": None,
        "created_at": "2023-09-18T15:04:34.515-03:00",
        "updated_at": "2023-09-19T09:30:00.000-03:00",
        "rating": 1,
        "status": "ongoing",
        "closed_at": None,
        "user": {
            "id": "622e7fb2f678470c001576f4a4",
            "name": "Hian Almada",
            "email": "hian.almada@rn.com",
            "avatar_url": None,
        },
        "deal_stage": {
            "id": "622e4cee412e87000d2f52a6",
            "name": "Sem contato",
            "nickname": "SC",
            "created_at": "2022-03-13T16:58:38.951-03:00",
            "updated_at": "2022-03-13T16:58:38.951-03:00",
            "order": 1,
        },
        "deal_pipeline": {"id": "622e4cee111e87000d2f52a5", "name": "Funil Padrão"},
        "deal_source": {},
        "campaign": {},
        "deal_lost_reason": {},
        "deal_custom_fields": [
            {
                "value": "48 99999-0000",
                "custom_field": {
                    "id": "611e89b0f269d0000b3bb2c2",
                    "label": "Whatsapp",
                    "required": False,
                    "unique": False,
                    "opts": [],
                    "type": "text",
                },
            },
            {
                "value": None,
                "custom_field": {"id": "112e89ca673c7300162f15b3", "label": "Instagram"},
            },
        ],
    },
}


def legacy(*leads: dict[str, Any]) -> bytes:
    return json.dumps({"leads": list(leads)}).encode()


def request(
    body: bytes, query: str = f"token={SECRET}", headers: dict[str, str] | None = None
) -> InboundRequest:
    return InboundRequest(
        method="POST",
        path="/webhooks/rdstation",
        query_string=query,
        headers={"content-type": "application/json", **(headers or {})},
        body=body,
        public_url="https://sla.example.com",
        received_at=NOW,
    )


def config(**kwargs: Any) -> SourceConfig:
    return SourceConfig(secret=kwargs.pop("secret", SECRET), **kwargs)


def lead_with(**changes: Any) -> dict[str, Any]:
    lead = copy.deepcopy(LEGACY_LEAD)
    lead.update(changes)
    return lead


def by_id(body: bytes, cfg: SourceConfig | None = None) -> dict[str, Any]:
    return {e.event_id: e for e in ADAPTER.parse(request(body), cfg or config()).events}


# --- authentication ----------------------------------------------------------------------------


def test_token_in_the_url_authenticates() -> None:
    ADAPTER.authenticate(request(legacy(LEGACY_LEAD)), config())


def test_crm_static_header_authenticates() -> None:
    body = json.dumps(DEAL_EVENT).encode()
    ADAPTER.authenticate(request(body, query="", headers={"x-lead-sla-token": SECRET}), config())
    ADAPTER.authenticate(
        request(body, query="", headers={"authorization": f"Bearer {SECRET}"}), config()
    )
    custom = config(options={"token_header": "X-RD-Auth"})
    ADAPTER.authenticate(request(body, query="", headers={"x-rd-auth": SECRET}), custom)


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ("token=wrong", {}),
        (f"token={SECRET[:-1]}", {}),
        ("", {"x-lead-sla-token": "wrong"}),
        ("", {"authorization": "Bearer wrong"}),
    ],
)
def test_wrong_token_is_unauthorized(query: str, headers: dict[str, str]) -> None:
    with pytest.raises(Unauthorized, match="does not match"):
        ADAPTER.authenticate(request(legacy(LEGACY_LEAD), query, headers), config())


def test_missing_token_is_unauthorized() -> None:
    with pytest.raises(Unauthorized, match="no token"):
        ADAPTER.authenticate(request(legacy(LEGACY_LEAD), query=""), config())


def test_missing_secret_says_none_is_configured() -> None:
    with pytest.raises(Unauthorized, match="no secret is configured"):
        ADAPTER.authenticate(request(legacy(LEGACY_LEAD)), SourceConfig(secret=None))


# --- Marketing, integration-screen payload -----------------------------------------------------


def test_a_converted_lead_yields_creation_and_conversion() -> None:
    events = by_id(legacy(LEGACY_LEAD))
    assert set(events) == {
        f"{UUID}:created",
        f"{UUID}:conversion:webinar-abc:2012-06-05T13:12:00.000Z",
    }
    created = events[f"{UUID}:created"]
    assert created.type == "lead.created"
    assert created.occurred_at == datetime(2012, 6, 4, 18, 31, 35, tzinfo=UTC)
    assert created.lead.status is None
    conversion = events[f"{UUID}:conversion:webinar-abc:2012-06-05T13:12:00.000Z"]
    assert conversion.type == "lead.status_changed"
    assert conversion.status.to == "new"
    assert conversion.occurred_at == datetime(2012, 6, 5, 13, 12, tzinfo=UTC)
    lead = conversion.lead
    assert lead.id == UUID
    assert lead.status == "new"
    assert lead.owner == "owner@example.com"
    assert lead.email == "lead@example.com"
    assert lead.name == "Lead Name"
    assert lead.source == "source 1"
    assert lead.score == 0.0
    assert lead.attributes["cf_segmento"] == "saude"
    assert lead.attributes["fit_score"] == "d"
    assert lead.attributes["crm_status"] == "Lead"
    assert lead.attributes["last_conversion"] == "webinar-abc"


def test_lead_stages_map_to_canonical_statuses() -> None:
    def status_of(stage: str) -> str:
        events = by_id(legacy(lead_with(lead_stage=stage)))
        return next(e.status.to for e in events.values() if e.status is not None)

    assert status_of("Lead") == "new"
    assert status_of("Lead Qualificado") == "mql"
    assert status_of("Cliente") == "customer"
    assert status_of("Estágio Próprio") == "Estágio Próprio"


def test_an_opportunity_mark_is_its_own_occurrence_at_its_own_time() -> None:
    marked = lead_with(opportunity="true", last_marked_opportunity_date="2012-06-05T09:00:00-03:00")
    events = by_id(legacy(marked))
    mark = events[f"{UUID}:opportunity:2012-06-05T12:00:00.000Z"]
    assert mark.type == "lead.status_changed"
    assert mark.status.to == "mql"
    assert mark.occurred_at == datetime(2012, 6, 5, 12, 0, tzinfo=UTC)
    # the conversion after the mark still sees an opportunity (stage "Lead" would say new)
    conversion = events[f"{UUID}:conversion:webinar-abc:2012-06-05T13:12:00.000Z"]
    assert conversion.status.to == "mql"


def test_a_conversion_before_the_mark_keeps_its_stage() -> None:
    marked = lead_with(opportunity="true", last_marked_opportunity_date="2012-06-06T09:00:00-03:00")
    conversion = by_id(legacy(marked))[f"{UUID}:conversion:webinar-abc:2012-06-05T13:12:00.000Z"]
    assert conversion.status.to == "new"


def test_a_customer_stays_customer_even_when_marked() -> None:
    marked = lead_with(
        lead_stage="Cliente",
        opportunity="true",
        last_marked_opportunity_date="2012-06-01T09:00:00Z",
    )
    conversion = by_id(legacy(marked))[f"{UUID}:conversion:webinar-abc:2012-06-05T13:12:00.000Z"]
    assert conversion.status.to == "customer"


def test_redelivery_repeats_ids_and_a_new_conversion_does_not() -> None:
    first = by_id(legacy(LEGACY_LEAD))
    assert by_id(legacy(LEGACY_LEAD)).keys() == first.keys()
    converted_again = lead_with(
        last_conversion={
            "content": {"identificador": "webinar-abc"},
            "created_at": "2012-07-01T10:00:00-03:00",
        }
    )
    later = by_id(legacy(converted_again))
    assert f"{UUID}:created" in later  # the creation is the same occurrence: it dedupes
    new_ids = later.keys() - first.keys()
    assert new_ids == {f"{UUID}:conversion:webinar-abc:2012-07-01T13:00:00.000Z"}


def test_a_batch_out_of_order_keeps_each_leads_own_times() -> None:
    late = lead_with(
        uuid="11111111-1111-1111-1111-111111111111",
        last_conversion={"content": {"identificador": "b"}, "created_at": "2026-11-23T15:00:00Z"},
    )
    early = lead_with(
        uuid="22222222-2222-2222-2222-222222222222",
        last_conversion={
            "content": {"identificador": "a"},
            "created_at": "2026-11-22T09:00:00-03:00",
        },
    )
    events = ADAPTER.parse(request(legacy(late, early)), config()).events
    conversions = {e.lead.id: e.occurred_at for e in events if ":conversion:" in e.event_id}
    assert conversions == {
        "11111111-1111-1111-1111-111111111111": datetime(2026, 11, 23, 15, 0, tzinfo=UTC),
        "22222222-2222-2222-2222-222222222222": datetime(2026, 11, 22, 12, 0, tzinfo=UTC),
    }


def test_status_map_overrides_stages_and_the_opportunity_flag() -> None:
    cfg = config(status_map={"opportunity": "sal", "Lead": "recycled"})
    marked = lead_with(opportunity="true", last_marked_opportunity_date="2012-06-05T09:00:00-03:00")
    events = by_id(legacy(marked), cfg)
    assert events[f"{UUID}:opportunity:2012-06-05T12:00:00.000Z"].status.to == "sal"
    plain = by_id(legacy(LEGACY_LEAD), cfg)
    assert plain[f"{UUID}:conversion:webinar-abc:2012-06-05T13:12:00.000Z"].status.to == "recycled"


def test_unusable_leads_are_ignored_not_raised() -> None:
    no_id = lead_with(uuid=None, id=None)
    no_time = {"uuid": "33333333-3333-3333-3333-333333333333", "email": "x@example.com"}
    delivery = ADAPTER.parse(request(legacy(no_id, no_time, "junk", LEGACY_LEAD)), config())
    assert delivery.ignored == 3
    assert {e.lead.id for e in delivery.events} == {UUID}


# --- Marketing, Webhooks API payload -----------------------------------------------------------


def test_webhooks_api_conversion() -> None:
    events = ADAPTER.parse(request(json.dumps(CONTACT_EVENT).encode()), config()).events
    assert len(events) == 1
    event = events[0]
    assert event.event_id == f"{UUID}:conversion:my-event-identifier:2018-03-13T17:07:04.254Z"
    assert event.type == "lead.status_changed"
    assert event.status.to == "new"
    assert event.occurred_at == datetime(2018, 3, 13, 17, 7, 4, 254000, tzinfo=UTC)
    assert event.lead.owner == "owner@example.com"
    assert event.lead.source == "Busca Paga | Google"
    assert event.lead.score == 20.0
    assert event.lead.attributes["cf_custom_field_example"] == ["Option1", "Option2"]
    assert event.lead.attributes["company"] == "Company Example 0"


def test_webhooks_api_opportunity_mark() -> None:
    body = {**CONTACT_EVENT, "event_type": "WEBHOOK.MARKED_OPPORTUNITY"}
    events = ADAPTER.parse(request(json.dumps(body).encode()), config()).events
    assert [(e.event_id, e.status.to if e.status else None) for e in events] == [
        (f"{UUID}:opportunity:2018-03-13T17:07:04.254Z", "mql")
    ]


def test_webhooks_api_unknown_event_type_is_ignored() -> None:
    body = {**CONTACT_EVENT, "event_type": "WEBHOOK.SOMETHING_NEW"}
    delivery = ADAPTER.parse(request(json.dumps(body).encode()), config())
    assert delivery.events == []
    assert delivery.ignored == 1


# --- CRM deals ---------------------------------------------------------------------------------


def test_crm_deal_update_becomes_status_and_owner() -> None:
    events = ADAPTER.parse(request(json.dumps(DEAL_EVENT).encode()), config()).events
    by_type = {e.type: e for e in events}
    assert set(by_type) == {"lead.status_changed", "lead.assigned"}
    status = by_type["lead.status_changed"]
    assert status.lead.id == "650878567482d9c0c7002050a475"
    assert status.status.to == "Sem contato"  # a pipeline stage is kept until mapped
    assert status.occurred_at == datetime(2023, 9, 19, 12, 30, tzinfo=UTC)
    assert status.lead.attributes["Whatsapp"] == "48 99999-0000"
    assert "Instagram" not in status.lead.attributes
    assert status.lead.attributes["pipeline"] == "Funil Padrão"
    assert by_type["lead.assigned"].owner.to == "hian.almada@rn.com"
    mapped = config(status_map={"Sem contato": "mql"})
    again = ADAPTER.parse(request(json.dumps(DEAL_EVENT).encode()), mapped).events
    assert [e.status.to for e in again if e.status] == ["mql"]
    assert {e.event_id for e in again} == {e.event_id for e in events}


def test_crm_won_and_lost_deals() -> None:
    won = copy.deepcopy(DEAL_EVENT)
    won["document"]["status"] = "won"
    assert [e.status.to for e in by_id(json.dumps(won).encode()).values() if e.status] == [
        "customer"
    ]
    lost = copy.deepcopy(DEAL_EVENT)
    lost["document"]["status"] = "lost"
    lost["document"]["deal_lost_reason"] = {"name": "Sem orçamento"}
    changes = [e.status for e in by_id(json.dumps(lost).encode()).values() if e.status]
    assert [(c.to, c.reason) for c in changes] == [("disqualified", "Sem orçamento")]


def test_crm_created_and_updated_for_the_same_change_dedupe() -> None:
    created = copy.deepcopy(DEAL_EVENT)
    created["event_name"] = "crm_deal_created"
    created_ids = set(by_id(json.dumps(created).encode()))
    updated_ids = set(by_id(json.dumps(DEAL_EVENT).encode()))
    assert created_ids - updated_ids == {"deal:650878567482d9c0c7002050a475:created"}


def test_crm_deleted_deal() -> None:
    deleted = copy.deepcopy(DEAL_EVENT)
    deleted["event_name"] = "crm_deal_deleted"
    events = list(by_id(json.dumps(deleted).encode()).values())
    assert [(e.event_id, e.type) for e in events] == [
        ("deal:650878567482d9c0c7002050a475:deleted", "lead.deleted")
    ]


def test_other_crm_entities_are_ignored() -> None:
    task = {"event_name": "crm_task_created", "document": {"id": "abc"}}
    delivery = ADAPTER.parse(request(json.dumps(task).encode()), config())
    assert (delivery.events, delivery.ignored) == ([], 1)


# --- bodies ------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [{"something": "else"}, [1, 2], "text", None])
def test_unknown_json_shapes_are_ignored(body: Any) -> None:
    delivery = ADAPTER.parse(request(json.dumps(body).encode()), config())
    assert (delivery.events, delivery.ignored) == ([], 1)


@pytest.mark.parametrize("body", [b"", b"{not json", b"leads=1", b"\xff\xfe"])
def test_malformed_body_is_bad_payload(body: bytes) -> None:
    with pytest.raises(BadPayload):
        ADAPTER.parse(request(body), config())
