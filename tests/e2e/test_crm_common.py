"""What the per-CRM end-to-end modules share, and the rule every CRM source shares: a source whose
secret is not configured refuses every delivery (401, naming the setting) and keeps nothing.

The per-CRM modules run under ``tests/fixtures/policies_crm.yaml``: a 24x7 ``first-touch`` clock
(start ``mql``, one hour, stopped by contact or by sal/sql/disqualified/recycled) whose breaches
go to the test's loopback receiver.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from service.config import Settings
from service.models import OutboxMessage, RawRequest
from service.notify.dispatcher import dispatch
from service.runtime import Runtime
from service.sweep import sweep
from tests.conftest import FIXTURES, RECEIVER_SECRET, Receiver

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # where the frozen clock starts
TARGET = timedelta(hours=1)  # first-touch in policies_crm.yaml
MIN = timedelta(minutes=1)
OUTCOME_KEYS = (
    "policy", "cycle", "state", "open", "started_at", "due_at", "stopped_at", "breached_at",
    "elapsed_business_seconds", "stop_reason", "target_business_seconds",
)  # fmt: skip
CRM_SOURCES = ("hubspot", "pipedrive", "salesforce", "rdstation", "close", "zoho")


def crm_settings(
    database_url: str, receiver: Receiver, secrets: dict[str, str], **fields: Any
) -> Settings:
    """Settings under the CRM policy file, with ``secrets`` as ``{source: secret}``."""
    env = {f"LEAD_SLA_WEBHOOK_SECRET_{source.upper()}": value for source, value in secrets.items()}
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=database_url,
        policy_file=str(FIXTURES / "policies_crm.yaml"),
        env_overrides={**env, "RECEIVER_URL": receiver.url, "RECEIVER_SECRET": RECEIVER_SECRET},
        **fields,
    )


async def tick(runtime: Runtime) -> None:
    """What the scheduler does each second: sweep, then deliver."""
    await sweep(runtime.sessions, runtime.clock.now(), runtime.policies.current)
    await dispatch(runtime.sessions, runtime.http, runtime.clock, runtime.policies.current,
                   runtime.retry)  # fmt: skip


def at(text: str) -> datetime:
    """An instant as the API renders it (``...Z``)."""
    return datetime.fromisoformat(text)


async def lead_detail(client: httpx.AsyncClient, source: str, lead_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/leads/{source}/{lead_id}")
    assert response.status_code == 200, response.text
    detail: dict[str, Any] = response.json()
    return detail


async def first_touch(client: httpx.AsyncClient, source: str, lead_id: str) -> dict[str, Any]:
    """The lead's one first-touch cycle."""
    detail = await lead_detail(client, source, lead_id)
    (cycle,) = [c for c in detail["cycles"] if c["policy"] == "first-touch"]
    return cycle


def outcome(cycle: dict[str, Any]) -> dict[str, Any]:
    """A cycle without what names its lead, to compare two leads' cycles."""
    return {key: cycle[key] for key in OUTCOME_KEYS}


async def leads(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/leads")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def raw_requests(runtime: Runtime, source: str) -> list[RawRequest]:
    async with runtime.sessions() as session:
        query = select(RawRequest).where(RawRequest.source == source).order_by(RawRequest.id)
        return list((await session.scalars(query)).all())


async def outbox_size(runtime: Runtime) -> int:
    async with runtime.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(OutboxMessage)) or 0)


def ignored(source: str) -> float:
    """``lead_sla_events_total{source=<source>,type="ignored"}`` now."""
    labels = {"source": source, "type": "ignored"}
    return REGISTRY.get_sample_value("lead_sla_events_total", labels) or 0.0


async def snapshot(
    client: httpx.AsyncClient, runtime: Runtime, source: str, *lead_ids: str
) -> dict[str, Any]:
    """Everything a redelivery must leave as it was: the leads, their timelines and cycles, and
    what is queued for delivery."""
    return {
        "leads": {lead_id: await lead_detail(client, source, lead_id) for lead_id in lead_ids},
        "outbox": await outbox_size(runtime),
    }


def breaches(receiver: Receiver) -> list[tuple[str, str]]:
    """(lead source, lead id) of every ``sla.breached`` the receiver got, in arrival order."""
    return [(b["lead"]["source"], b["lead"]["id"]) for b in receiver.bodies()
            if b["type"] == "sla.breached"]  # fmt: skip


# -- every CRM source without its secret ------------------------------------------------------


@pytest.fixture
def settings(database_url: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for source in CRM_SOURCES:
        monkeypatch.delenv(f"LEAD_SLA_WEBHOOK_SECRET_{source.upper()}", raising=False)
    return crm_settings(database_url, receiver, {})


async def test_every_source_without_a_secret_refuses_and_keeps_nothing(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    runtime: Runtime = app.state.runtime
    for source in CRM_SOURCES:
        response = await client.post(
            f"/webhooks/{source}?token=anything", content=b"{}",
            headers={"content-type": "application/json", "authorization": "Basic dTpw"},
        )  # fmt: skip
        assert response.status_code == 401, (source, response.text)
        assert f"LEAD_SLA_WEBHOOK_SECRET_{source.upper()}" in response.json()["error"]
        assert await raw_requests(runtime, source) == []
    assert await leads(client) == []
