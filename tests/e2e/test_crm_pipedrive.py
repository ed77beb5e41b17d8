"""Pipedrive end to end: webhooks v2 through ``POST /webhooks/pipedrive`` with the HTTP Basic
credentials configured on the webhook, the real database and pipeline, the sweep and a loopback
receiver.

Deals are the leads here (``deal:<id>``); their stages map to statuses through the policy file's
``stage_map`` (1 -> mql, 2 -> sal, 3 -> sql; stage 4 unmapped). Pipedrive posts one notification
per request, so "a batch out of order" is a series of requests arriving in reverse.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

import httpx
import pytest

from service.clock import FrozenClock
from service.config import Settings
from tests.conftest import Receiver
from tests.e2e.test_crm_common import MIN, T0, TARGET, CrmSource, accepted, at, crm_settings

SOURCE = "pipedrive"  # the source the ``crm`` fixture speaks for

CREDENTIALS = "lead-sla:Zq8-long-random-webhook-password"  # http_auth_user:http_auth_password
OWNER = 12415231


@pytest.fixture
def settings(database_url: str, receiver: Receiver) -> Settings:
    return crm_settings(database_url, receiver, {SOURCE: CREDENTIALS})


def webhook(
    entity: str, action: str, entity_id: int | str, event_id: str, when: datetime,
    data: dict[str, Any] | None, previous: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A v2 webhook body as Pipedrive posts it."""
    stamp = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "data": data,
        "previous": previous,
        "meta": {
            "action": action, "company_id": "8087566",
            "correlation_id": f"corr-{event_id}", "entity_id": str(entity_id), "entity": entity,
            "id": event_id, "is_bulk_edit": False, "timestamp": stamp, "type": "general",
            "user_id": str(OWNER), "version": "2.0", "webhook_id": "4710827",
            "webhook_owner_id": "12094821", "change_source": "app", "attempt": 1,
            "host": "acme.pipedrive.com",
        },
    }  # fmt: skip


def deal_data(deal_id: int, stage: int, when: datetime, **fields: Any) -> dict[str, Any]:
    stamp = when.isoformat(timespec="seconds").replace("+00:00", "Z")
    return {
        "add_time": stamp, "creator_user_id": OWNER, "currency": "EUR", "custom_fields": {},
        "id": deal_id, "label_ids": [], "lost_reason": None, "org_id": 1, "owner_id": OWNER,
        "person_id": deal_id, "pipeline_id": 1, "stage_id": stage, "status": "open",
        "title": f"Deal {deal_id}", "update_time": stamp, "value": 100, "visible_to": "3",
        **fields,
    }  # fmt: skip


def new_deal(deal_id: int, stage: int, when: datetime, event_id: str) -> dict[str, Any]:
    return webhook("deal", "create", deal_id, event_id, when, deal_data(deal_id, stage, when))


def stage_moved(
    deal_id: int, stage: int, was: int, when: datetime, event_id: str
) -> dict[str, Any]:
    data = deal_data(deal_id, stage, when)
    return webhook("deal", "change", deal_id, event_id, when, data, {"stage_id": was})


def activity_data(activity_id: int, deal_id: int, done: bool, kind: str = "call") -> dict[str, Any]:
    return {
        "active_flag": True, "custom_fields": {}, "deal_id": deal_id, "done": done,
        "due_date": "2026-11-23", "id": activity_id, "lead_id": None, "owner_id": OWNER,
        "person_id": deal_id, "subject": "First call", "type": kind,
    }  # fmt: skip


def done_call(activity_id: int, deal_id: int, when: datetime, event_id: str) -> dict[str, Any]:
    data = activity_data(activity_id, deal_id, done=True)
    return webhook("activity", "create", activity_id, event_id, when, data)


def basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


async def deliver(
    client: httpx.AsyncClient, body: dict[str, Any], authorization: str | None = None
) -> httpx.Response:
    headers = {"content-type": "application/json", "user-agent": "Pipedrive Webhooks"}
    headers["authorization"] = authorization if authorization is not None else basic(CREDENTIALS)
    if not headers["authorization"]:
        del headers["authorization"]
    return await client.post("/webhooks/pipedrive", content=json.dumps(body), headers=headers)


async def test_mql_stage_starts_a_call_marked_done_stops_and_an_untouched_deal_breaches_once(
    crm: CrmSource, client: httpx.AsyncClient
) -> None:
    start = T0 - 10 * MIN
    accepted(await deliver(client, new_deal(8, 1, start, "ev-deal-8")), 1)
    accepted(await deliver(client, new_deal(9, 1, start, "ev-deal-9")), 1)
    for deal in ("deal:8", "deal:9"):
        await crm.assert_running(deal, since=start)
    detail = await crm.lead("deal:8")
    assert (detail["lead"]["status"], detail["lead"]["owner"]) == ("mql", str(OWNER))

    # A call scheduled on deal 8 is a plan, not contact; marking it done is.
    planned = activity_data(2, 8, done=False)
    scheduled = webhook("activity", "create", 2, "ev-act-2a", T0 - 8 * MIN, planned)
    accepted(await deliver(client, scheduled), 0)
    assert (await crm.first_touch("deal:8"))["state"] == "running"
    done = {**planned, "done": True}
    marked = webhook("activity", "change", 2, "ev-act-2b", T0 - 2 * MIN, done, {"done": False})
    accepted(await deliver(client, marked), 1)
    touched = await crm.first_touch("deal:8")
    assert (touched["state"], touched["open"]) == ("met", False)
    assert at(touched["stopped_at"]) == T0 - 2 * MIN
    assert touched["stop_reason"] == "activity: call"

    await crm.assert_breach_sent("deal:9", owner=str(OWNER), due_at=start + TARGET)
    await crm.assert_not_sent_again()


async def test_retried_webhooks_change_nothing(
    crm: CrmSource, client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    sent = [
        new_deal(20, 1, T0 - 30 * MIN, "ev-20"),
        done_call(21, 20, T0 - 20 * MIN, "ev-21"),
        new_deal(22, 1, T0 - 30 * MIN, "ev-22"),
    ]
    for body in sent:
        accepted(await deliver(client, body), 1)
    before = await crm.snapshot("deal:20", "deal:22")
    assert before["leads"]["deal:20"]["cycles"][0]["state"] == "met"

    clock.advance(minutes=1)
    for body in sent:  # Pipedrive's retry: the same event, the attempt counted up
        retry = {**body, "meta": {**body["meta"], "attempt": 2}}
        accepted(await deliver(client, retry), 0, duplicates=1)
    assert await crm.snapshot("deal:20", "deal:22") == before


async def test_webhooks_arriving_in_reverse_give_the_cycle_of_in_order_arrival(
    crm: CrmSource, client: httpx.AsyncClient
) -> None:
    def history(deal: int) -> list[dict[str, Any]]:
        return [
            new_deal(deal, 1, T0 - 40 * MIN, f"ev-{deal}-a"),
            done_call(deal * 10, deal, T0 - 20 * MIN, f"ev-{deal}-b"),
            stage_moved(deal, 2, 1, T0 - 10 * MIN, f"ev-{deal}-c"),
        ]

    for body in history(30):
        accepted(await deliver(client, body), 1)
    for body in history(31)[::-1]:
        accepted(await deliver(client, body), 1)
    await crm.assert_met_alike(
        "deal:30", "deal:31", started_at=T0 - 40 * MIN, stopped_at=T0 - 20 * MIN,
        stop_reason="activity: call", status="sal",
    )  # fmt: skip


async def test_bad_credentials_are_refused_and_nothing_is_stored(
    crm: CrmSource, client: httpx.AsyncClient
) -> None:
    forgeries = {
        "wrong password": basic("lead-sla:wrong-password"),
        "wrong user": basic("someone-else:Zq8-long-random-webhook-password"),
        "not basic": "Bearer " + base64.b64encode(CREDENTIALS.encode()).decode(),
        "none": "",
    }
    for forgery, authorization in forgeries.items():
        response = await deliver(client, new_deal(40, 1, T0, "ev-40"), authorization)
        assert response.status_code == 401, (forgery, response.text)
    await crm.assert_nothing_stored()


async def test_notifications_it_does_not_use_are_acknowledged_counted_and_kept(
    crm: CrmSource, client: httpx.AsyncClient
) -> None:
    organization = {"id": 1, "name": "Acme", "owner_id": OWNER, "address": None}
    custom_only = deal_data(50, 1, T0)
    custom_only["custom_fields"] = {"3d0fa3429dfa2d3dec265b4fc5dc8258ab66cdf3": "Tallinn"}
    unused = [
        webhook("organization", "create", 1, "ev-org", T0, organization),
        webhook("deal", "change", 50, "ev-cf", T0, custom_only,
                {"custom_fields": {"3d0fa3429dfa2d3dec265b4fc5dc8258ab66cdf3": None}}),
        webhook("activity", "create", 51, "ev-task", T0, activity_data(51, 50, True, "task")),
        webhook("note", "create", 52, "ev-note", T0, {"id": 52, "deal_id": 50, "content": "hi"}),
    ]  # fmt: skip
    await crm.assert_ignored_and_kept(unused, lambda body: deliver(client, body))


async def test_unmapped_stage_is_kept_as_sent(crm: CrmSource, client: httpx.AsyncClient) -> None:
    accepted(await deliver(client, new_deal(60, 1, T0 - 20 * MIN, "ev-60a")), 1)
    accepted(await deliver(client, stage_moved(60, 4, 1, T0 - 10 * MIN, "ev-60b")), 1)
    detail = await crm.lead("deal:60")
    assert detail["lead"]["status"] == "4"
    last = detail["timeline"][-1]
    assert last["type"] == "lead.status_changed"
    assert (last["data"]["status"]["from"], last["data"]["status"]["to"]) == ("mql", "4")
    assert (await crm.first_touch("deal:60"))["state"] == "running"
