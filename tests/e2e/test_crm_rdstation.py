"""RD Station end to end: Marketing and CRM webhooks through ``POST /webhooks/rdstation?token=``,
the real database and pipeline, the sweep and a loopback receiver.

Marketing's lead payload (``{"leads": [...]}``) starts a first-touch clock when a lead is marked
as opportunity (``mql`` by default). Nothing in Marketing's own vocabulary means "contacted":
contact is made and recorded in RD Station CRM, whose deals are leads of their own; the policy
file maps the CRM's default pipeline stages "Sem contato" to mql and "Contato feito" to sal. RD
Station posts one body per request and sends its timestamps with the account's offset (-03:00).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from service.clock import FrozenClock
from service.config import Settings
from tests.conftest import Receiver
from tests.e2e.test_crm_common import MIN, T0, TARGET, CrmSource, accepted, at, crm_settings

SOURCE = "rdstation"  # the source the ``crm`` fixture speaks for

SECRET = "6f1d0c3b9a8e7f6d5c4b3a29180f7e6d5c4b3a29180f7e6d5c4b3a2918"
SAO_PAULO = timezone(timedelta(hours=-3))
MARKETER = "owner@example.com"
SELLER = "hian.almada@rn.com"


@pytest.fixture
def settings(database_url: str, receiver: Receiver) -> Settings:
    return crm_settings(database_url, receiver, {SOURCE: SECRET})


def local(when: datetime) -> str:
    return when.astimezone(SAO_PAULO).isoformat(timespec="milliseconds")


def marked_lead(uuid: str, marked: datetime) -> dict[str, Any]:
    """A Marketing lead (integration-screen format) marked as opportunity at ``marked``."""
    return {
        "id": "1", "uuid": uuid, "email": f"{uuid[:8]}@example.com", "name": "Lead Name",
        "company": "Company Name", "created_at": local(T0 - timedelta(days=3)),
        "opportunity": "true", "last_marked_opportunity_date": local(marked),
        "number_conversions": "2", "user": MARKETER,
        "first_conversion": {
            "content": {"identificador": "ebook-abc"}, "created_at": local(T0 - timedelta(days=3)),
            "source": "source 1", "conversion_origin": {"source": "source 1"},
        },
        "last_conversion": {
            "content": {"identificador": "webinar-abc"},
            "created_at": local(T0 - timedelta(days=2)), "source": "source 2",
        },
        "lead_stage": "Lead", "fit_score": "d", "interest": 20,
    }  # fmt: skip


def deal(
    event: str, deal_id: str, stage: str, updated: datetime, created: datetime | None = None,
    status: str = "ongoing",
) -> dict[str, Any]:  # fmt: skip
    """An RD Station CRM deal webhook."""
    return {
        "event_name": event,
        "document": {
            "id": deal_id, "name": f"Negociação {deal_id[-4:]}", "amount_total": 0.0,
            "created_at": local(created or updated), "updated_at": local(updated), "rating": 1,
            "status": status, "closed_at": None,
            "user": {"id": "622e7fb2f678470c001576f4a4", "name": "Hian Almada", "email": SELLER},
            "deal_stage": {"id": f"stage-{stage}", "name": stage, "order": 1},
            "deal_pipeline": {"id": "622e4cee111e87000d2f52a5", "name": "Funil Padrão"},
            "deal_source": {}, "campaign": {}, "deal_lost_reason": {}, "deal_custom_fields": [],
            "contacts": [{"name": "Ana", "emails": [{"email": "ana@example.com"}]}],
        },
    }  # fmt: skip


def created_deal(deal_id: str, stage: str, when: datetime) -> dict[str, Any]:
    return deal("crm_deal_created", deal_id, stage, when)


def moved_deal(deal_id: str, stage: str, when: datetime, created: datetime) -> dict[str, Any]:
    return deal("crm_deal_updated", deal_id, stage, when, created)


async def deliver(
    client: httpx.AsyncClient, body: dict[str, Any], token: str | None = SECRET
) -> httpx.Response:
    url = "/webhooks/rdstation" + (f"?token={token}" if token is not None else "")
    headers = {"content-type": "application/json", "user-agent": "RD Station Webhooks"}
    return await client.post(url, content=json.dumps(body), headers=headers)


async def test_opportunity_mark_starts_contact_in_the_crm_stops_and_an_untouched_lead_breaches(
    crm: CrmSource, client: httpx.AsyncClient
) -> None:
    start = T0 - 10 * MIN
    marketing = "c2f3d2b3-7250-4d27-97f4-eef38be32f7f"
    # created, the last conversion (stage Lead: new), the opportunity mark (mql)
    accepted(await deliver(client, {"leads": [marked_lead(marketing, start)]}), 3)
    await crm.assert_running(marketing, since=start)
    detail = await crm.lead(marketing)
    assert (detail["lead"]["status"], detail["lead"]["owner"]) == ("mql", MARKETER)

    crm_deal = "650878567482d9c0c7002050a475"
    accepted(await deliver(client, created_deal(crm_deal, "Sem contato", start)), 3)
    assert (await crm.first_touch(crm_deal))["state"] == "running"
    accepted(await deliver(client, moved_deal(crm_deal, "Contato feito", T0 - 2 * MIN, start)), 2)
    touched = await crm.first_touch(crm_deal)
    assert (touched["state"], touched["open"]) == ("met", False)
    assert at(touched["started_at"]) == start
    assert at(touched["stopped_at"]) == T0 - 2 * MIN
    assert touched["stop_reason"] == "status: sal"

    await crm.assert_breach_sent(marketing, owner=MARKETER, due_at=start + TARGET)
    await crm.assert_not_sent_again()


async def test_redelivered_bodies_change_nothing(
    crm: CrmSource, client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    marketing = "11111111-2222-4333-8444-555555555555"
    crm_deal = "650878567482d9c0c70020501111"
    sent = [
        ({"leads": [marked_lead(marketing, T0 - 30 * MIN)]}, 3),
        (created_deal(crm_deal, "Sem contato", T0 - 30 * MIN), 3),
        (moved_deal(crm_deal, "Contato feito", T0 - 20 * MIN, T0 - 30 * MIN), 2),
    ]
    for body, count in sent:
        accepted(await deliver(client, body), count)
    before = await crm.snapshot(marketing, crm_deal)
    assert before["leads"][crm_deal]["cycles"][0]["state"] == "met"

    clock.advance(minutes=1)
    for body, count in sent:
        accepted(await deliver(client, body), 0, duplicates=count)
    # RD Station CRM fires crm_deal_updated along with crm_deal_created for a new deal: the same
    # deal state, so it is a redelivery too.
    companion = deal("crm_deal_updated", crm_deal, "Sem contato", T0 - 30 * MIN)
    accepted(await deliver(client, companion), 0, duplicates=3)
    assert await crm.snapshot(marketing, crm_deal) == before


async def test_deal_webhooks_arriving_in_reverse_give_the_cycle_of_in_order_arrival(
    crm: CrmSource, client: httpx.AsyncClient
) -> None:
    def history(deal_id: str) -> list[dict[str, Any]]:
        return [
            created_deal(deal_id, "Sem contato", T0 - 40 * MIN),
            moved_deal(deal_id, "Contato feito", T0 - 10 * MIN, T0 - 40 * MIN),
        ]

    in_order, reversed_ = "650878567482d9c0c70020502001", "650878567482d9c0c70020502002"
    for body in history(in_order):
        assert (await deliver(client, body)).status_code == 202
    for body in history(reversed_)[::-1]:
        assert (await deliver(client, body)).status_code == 202
    await crm.assert_met_alike(
        in_order, reversed_, started_at=T0 - 40 * MIN, stopped_at=T0 - 10 * MIN,
        stop_reason="status: sal", status="sal",
    )  # fmt: skip


async def test_bad_token_is_refused_and_nothing_is_stored(
    crm: CrmSource, client: httpx.AsyncClient
) -> None:
    body = {"leads": [marked_lead("33333333-2222-4333-8444-555555555555", T0 - MIN)]}
    for token in ("wrong", SECRET[:-1], "", None):  # wrong, truncated, empty, absent
        response = await deliver(client, body, token)
        assert response.status_code == 401, (token, response.text)
    await crm.assert_nothing_stored()


async def test_bodies_it_does_not_use_are_acknowledged_counted_and_kept(
    crm: CrmSource, client: httpx.AsyncClient
) -> None:
    unused: list[dict[str, Any]] = [
        {"event_name": "crm_task_created", "document": {"id": "task-1", "subject": "Ligar"}},
        {"event_type": "WEBHOOK.UNSUBSCRIBED", "event_timestamp": local(T0),
         "contact": {"uuid": "44444444-2222-4333-8444-555555555555"}},
        {"leads": [{"email": "no-uuid@example.com", "name": "Sem id"}]},
        {"organization": {"id": "org-1"}},
    ]  # fmt: skip
    await crm.assert_ignored_and_kept(unused, lambda body: deliver(client, body))


async def test_unmapped_pipeline_stage_is_kept_as_sent(
    crm: CrmSource, client: httpx.AsyncClient
) -> None:
    crm_deal = "650878567482d9c0c70020503001"
    accepted(await deliver(client, created_deal(crm_deal, "Sem contato", T0 - 20 * MIN)), 3)
    proposal = moved_deal(crm_deal, "Proposta enviada", T0 - 10 * MIN, T0 - 20 * MIN)
    accepted(await deliver(client, proposal), 2)
    detail = await crm.lead(crm_deal)
    assert detail["lead"]["status"] == "Proposta enviada"
    status_changes = [e for e in detail["timeline"] if e["type"] == "lead.status_changed"]
    assert [e["data"]["status"]["to"] for e in status_changes] == ["mql", "Proposta enviada"]
    assert (await crm.first_touch(crm_deal))["state"] == "running"
