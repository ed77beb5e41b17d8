"""What the per-CRM end-to-end modules share, and the rule every CRM source shares: a source whose
secret is not configured refuses every delivery (401, naming the setting) and keeps nothing.

The per-CRM modules run under ``tests/fixtures/policies_crm.yaml``: a 24x7 ``first-touch`` clock
(start ``mql``, one hour, stopped by contact or by sal/sql/disqualified/recycled) whose breaches
go to the test's loopback receiver. Each module names its source in ``SOURCE`` and reaches the
service through the ``crm`` fixture (``tests/e2e/conftest.py``), a ``CrmSource`` for that source.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from service.clock import FrozenClock
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
    leads = {lead_id: await lead_detail(client, source, lead_id) for lead_id in lead_ids}
    for detail in leads.values():
        for cycle in detail["cycles"]:
            if cycle["open"]:  # counted up to the moment of asking: moves with the clock
                del cycle["elapsed_business_seconds"]
    return {"leads": leads, "outbox": await outbox_size(runtime)}


def breaches(receiver: Receiver) -> list[tuple[str, str]]:
    """(lead source, lead id) of every ``sla.breached`` the receiver got, in arrival order."""
    return [(b["lead"]["source"], b["lead"]["id"]) for b in receiver.bodies()
            if b["type"] == "sla.breached"]  # fmt: skip


def accepted(response: httpx.Response, count: int, duplicates: int = 0) -> None:
    """The standard answer: ``count`` events stored, ``duplicates`` already stored before."""
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": count, "duplicates": duplicates}


class CrmSource:
    """The running service as one CRM source's tests see it: the source's leads and stored
    requests, its count of ignored content, and the scheduler's tick with the receiver behind it.

    The ``assert_*`` methods are the checks every CRM's scenarios end with; what leads to them
    (the CRM's own payloads and how they are sent) stays in the CRM's module.
    """

    def __init__(
        self,
        source: str,
        client: httpx.AsyncClient,
        runtime: Runtime,
        clock: FrozenClock,
        receiver: Receiver,
    ) -> None:
        self.source = source
        self.client = client
        self.runtime = runtime
        self.clock = clock
        self.receiver = receiver

    async def lead(self, lead_id: str) -> dict[str, Any]:
        """The lead's detail: current fields, timeline and cycles."""
        return await lead_detail(self.client, self.source, lead_id)

    async def first_touch(self, lead_id: str) -> dict[str, Any]:
        return await first_touch(self.client, self.source, lead_id)

    async def leads(self) -> list[dict[str, Any]]:
        """Every lead the service knows, of any source."""
        return await leads(self.client)

    async def raw_requests(self) -> list[RawRequest]:
        return await raw_requests(self.runtime, self.source)

    async def snapshot(self, *lead_ids: str) -> dict[str, Any]:
        return await snapshot(self.client, self.runtime, self.source, *lead_ids)

    def ignored(self) -> float:
        return ignored(self.source)

    async def tick(self) -> None:
        await tick(self.runtime)

    async def assert_running(self, lead_id: str, since: datetime) -> None:
        """The lead's first-touch clock runs since ``since`` and is due one target later."""
        cycle = await self.first_touch(lead_id)
        assert (cycle["state"], cycle["open"]) == ("running", True)
        assert at(cycle["started_at"]) == since
        assert at(cycle["due_at"]) == since + TARGET

    async def assert_breach_sent(self, lead_id: str, *, owner: str, due_at: datetime) -> None:
        """Sweeping before the deadline sends nothing; a minute past it, exactly one
        ``sla.breached`` reaches the receiver, for ``lead_id`` with its owner, the mql status and
        the deadline."""
        await self.tick()
        assert self.receiver.requests == []
        self.clock.set(due_at + MIN)
        await self.tick()
        await self.tick()
        assert breaches(self.receiver) == [(self.source, lead_id)]
        assert len(self.receiver.requests) == 1
        (body,) = self.receiver.bodies()
        assert (body["lead"]["owner"], body["lead"]["status"]) == (owner, "mql")
        assert at(body["sla"]["due_at"]) == due_at

    async def assert_not_sent_again(self) -> None:
        """Later sweeps do not send the breach again."""
        self.clock.advance(minutes=5)
        await self.tick()
        assert len(self.receiver.requests) == 1

    async def assert_met_alike(
        self,
        in_order: str,
        reordered: str,
        *,
        started_at: datetime,
        stopped_at: datetime,
        stop_reason: str | None = None,
        status: str,
    ) -> None:
        """The lead whose events arrived in order met its first touch, started and stopped at the
        given instants (for ``stop_reason``, when given); the lead whose events arrived out of
        order ends the same: the same first-touch outcome, and both in ``status``."""
        expected = await self.first_touch(in_order)
        assert expected["state"] == "met"
        if stop_reason is not None:
            assert expected["stop_reason"] == stop_reason
        assert at(expected["started_at"]) == started_at
        assert at(expected["stopped_at"]) == stopped_at
        assert outcome(await self.first_touch(reordered)) == outcome(expected)
        for lead_id in (in_order, reordered):
            assert (await self.lead(lead_id))["lead"]["status"] == status

    async def assert_nothing_stored(self) -> None:
        """What a refused delivery leaves: no lead, and no stored request of this source."""
        assert await self.leads() == []
        assert await self.raw_requests() == []

    async def assert_ignored_and_kept(
        self, bodies: Sequence[Any], send: Callable[[Any], Awaitable[httpx.Response]]
    ) -> None:
        """Each body, sent on its own, is acknowledged with nothing accepted, counted once as
        ignored and kept as received; no lead appears."""
        before = self.ignored()
        sent = []
        for body in bodies:
            response = await send(body)
            accepted(response, 0)
            sent.append(response.request.content)
        assert self.ignored() - before == len(bodies)
        assert [raw.body for raw in await self.raw_requests()] == sent
        assert await self.leads() == []


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
