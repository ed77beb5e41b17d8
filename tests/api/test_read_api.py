"""The REST API of CONTRACT.md §5 that dashboards and work queues read: leads, cycles, filters,
cursors, API keys, probes, metrics, OpenAPI and policy reloads."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import threading
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from service.clock import FrozenClock
from service.config import Settings
from service.event_codec import event_from_json
from service.gauges import refresh_gauges
from service.ingest import store_delivery
from service.models import Cycle, Lead
from service.runtime import Runtime
from service.sweep import sweep
from tests.conftest import FIXTURES
from tests.helpers import activity, post_events, status
from tests.store import rows, running_app, sample

MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)


def z(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


async def get(client: httpx.AsyncClient, url: str, **params: Any) -> Any:
    response = await client.get(url, params=params)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def runtime(app: FastAPI) -> Runtime:
    result: Runtime = app.state.runtime
    return result


@pytest.fixture
async def population(client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime) -> datetime:
    """Leads in every state, swept at ``now`` (returned):

    B1 breached · M1 met on both policies (posted out of order) · R1 running past its reminder ·
    R2 running on both policies · P1 paused · N1 never an MQL · H1 from another CRM.
    """
    t = clock.now()
    posted = await post_events(
        client, t,
        status("b1", "B1", t - 2 * HOUR, "mql", owner="rep-7", team="emea", source="webinar"),
        activity("m2", "M1", t - 40 * MIN),
        status("m1", "M1", t - 50 * MIN, "mql", owner="rep-8", team="latam"),
        status("r1", "R1", t - 35 * MIN, "mql", owner="rep-7", team="emea"),
        status("r2", "R2", t - 10 * MIN, "mql", owner="rep-9", team="latam"),
        status("p1", "P1", t - 20 * MIN, "mql", owner="rep-8", team="emea"),
        status("p2", "P1", t - 15 * MIN, "waiting_on_lead"),
        status("n1", "N1", t - 5 * MIN, "new", owner="rep-7"),
    )  # fmt: skip
    assert posted.json() == {"accepted": 8, "duplicates": 0}
    other_crm = event_from_json(status("h1", "H1", t - 25 * MIN, "mql", owner="rep-9"))
    async with runtime.sessions() as session, session.begin():
        await store_delivery(session, "hubspot", [other_crm], None, t, runtime.policies.current)
    await sweep(runtime.sessions, t, runtime.policies.current)
    return t


# --- /leads ---------------------------------------------------------------------------------


async def lead_ids(client: httpx.AsyncClient, **params: Any) -> set[str]:
    page = await get(client, "/api/v1/leads", **params)
    assert page["next_cursor"] is None
    return {item["id"] for item in page["items"]}


LEAD_FILTERS: list[tuple[dict[str, str], set[str]]] = [
    ({}, {"B1", "M1", "R1", "R2", "P1", "N1", "H1"}),
    ({"status": "mql"}, {"B1", "M1", "R1", "R2", "H1"}),
    ({"owner": "rep-7"}, {"B1", "R1", "N1"}),
    ({"team": "latam"}, {"M1", "R2"}),
    ({"source": "hubspot"}, {"H1"}),
    ({"source": "generic", "team": "emea"}, {"B1", "R1", "P1"}),
    ({"lead_source": "webinar"}, {"B1"}),
    ({"breached": "true"}, {"B1"}),
    ({"breached": "false"}, {"M1", "R1", "R2", "P1", "N1", "H1"}),
    ({"at_risk": "true"}, {"R1"}),
    ({"at_risk": "false", "owner": "rep-7"}, {"B1", "N1"}),
    ({"owner": "rep-7", "status": "mql"}, {"B1", "R1"}),
    ({"owner": "nobody"}, set()),
]


async def test_lead_filters(client: httpx.AsyncClient, population: datetime) -> None:
    for params, expected in LEAD_FILTERS:
        assert await lead_ids(client, **params) == expected, params


async def walk(client: httpx.AsyncClient, url: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a paginated list, page by page."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        page = await get(client, url, **params, **({"cursor": cursor} if cursor else {}))
        assert len(page["items"]) <= params["limit"]
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
        assert page["items"], "a cursor after an empty page"
    raise AssertionError("pagination did not end")


async def test_lead_pagination_has_no_duplicates_or_gaps(
    client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    many = [status(f"q{i}", f"Q{i:02}", clock.now() - i * MIN, "new" if i % 3 else "mql")
            for i in range(31)]  # fmt: skip
    await post_events(client, clock.now(), *many)
    everyone = {f"Q{i:02}" for i in range(31)}
    for limit in (1, 7, 10, 31, 100):
        items = await walk(client, "/api/v1/leads", limit=limit)
        ids = [item["id"] for item in items]
        assert len(ids) == len(set(ids)) == 31
        assert set(ids) == everyone
    filtered = [i["id"] for i in await walk(client, "/api/v1/leads", limit=4, status="new")]
    assert sorted(filtered) == sorted(f"Q{i:02}" for i in range(31) if i % 3)
    first = await get(client, "/api/v1/leads", limit=31)
    assert first["next_cursor"] is None


@pytest.mark.parametrize("cursor", ["%%%", "bm90IGpzb24", "WzFd", "eyJpZCI6ICJ4In0"])
async def test_a_bad_cursor_is_400(client: httpx.AsyncClient, cursor: str) -> None:
    # not base64 · not JSON · not an object · {"id": "x"}
    for url in ("/api/v1/leads", "/api/v1/slas"):
        response = await client.get(url, params={"cursor": cursor})
        assert response.status_code == 400, (url, response.text)


async def test_a_forged_sla_cursor_is_400(client: httpx.AsyncClient) -> None:
    for position in ({"due": 5, "id": 1}, {"due": "2026-11-23T12:00:00", "id": 1}, {"due": None}):
        cursor = base64.urlsafe_b64encode(json.dumps(position).encode()).decode()
        response = await client.get("/api/v1/slas", params={"cursor": cursor})
        assert response.status_code == 400, (position, response.text)


async def test_lead_detail_has_the_ordered_timeline_and_every_cycle(
    client: httpx.AsyncClient, population: datetime
) -> None:
    t = population
    detail = await get(client, "/api/v1/leads/generic/M1")
    assert detail["lead"]["id"] == "M1" and detail["lead"]["source"] == "generic"
    assert (detail["lead"]["status"], detail["lead"]["owner"]) == ("mql", "rep-8")
    timeline = detail["timeline"]
    assert [e["event_id"] for e in timeline] == ["m1", "m2"]  # posted the other way round
    assert [e["occurred_at"] for e in timeline] == [z(t - 50 * MIN), z(t - 40 * MIN)]
    assert timeline[1]["data"]["activity"]["kind"] == "call"
    cycles = {c["policy"]: c for c in detail["cycles"]}
    assert set(cycles) == {"first-touch", "business-touch"}
    first = cycles["first-touch"]
    assert (first["cycle"], first["state"], first["open"]) == (1, "met", False)
    assert (first["started_at"], first["stopped_at"], first["breached_at"]) == (
        z(t - 50 * MIN), z(t - 40 * MIN), None,
    )  # fmt: skip
    assert first["due_at"] == z(t + 10 * MIN)
    assert first["elapsed_business_seconds"] == 600

    breached = (await get(client, "/api/v1/leads/generic/B1"))["cycles"]
    (b1,) = breached
    assert (b1["state"], b1["open"], b1["stopped_at"]) == ("breached", True, None)
    assert (b1["started_at"], b1["due_at"], b1["breached_at"]) == (
        z(t - 2 * HOUR), z(t - HOUR), z(t - HOUR),
    )  # fmt: skip
    assert "breach" in b1["fired"]

    paused = (await get(client, "/api/v1/leads/generic/P1"))["cycles"][0]
    assert (paused["state"], paused["due_at"]) == ("paused", None)
    assert paused["pauses"][0]["start"] == (t - 15 * MIN).isoformat()


async def test_an_open_cycles_elapsed_time_is_counted_up_to_the_request(
    client: httpx.AsyncClient, clock: FrozenClock, population: datetime
) -> None:
    """Stored cycles keep the elapsed time of their last change; a running clock moves on."""
    clock.advance(minutes=10)

    async def elapsed(lead_id: str) -> float:
        cycles = (await get(client, f"/api/v1/leads/generic/{lead_id}"))["cycles"]
        (first,) = [c for c in cycles if c["policy"] == "first-touch"]
        return float(first["elapsed_business_seconds"])

    assert await elapsed("B1") == 2 * 3600 + 600  # breached, still open: the clock runs on
    assert await elapsed("P1") == 300  # paused 5 minutes after it started
    assert await elapsed("M1") == 600  # stopped: as it stopped
    queue = await get(client, "/api/v1/slas", policy="first-touch", owner="rep-7", open="true")
    assert [(c["lead"]["id"], c["elapsed_business_seconds"]) for c in queue["items"]] == [
        ("B1", 7800.0), ("R1", 2700.0),
    ]  # fmt: skip


async def test_lead_detail_404(client: httpx.AsyncClient, population: datetime) -> None:
    for path in ("/api/v1/leads/generic/NOPE", "/api/v1/leads/hubspot/B1"):
        response = await client.get(path)
        assert response.status_code == 404, path
    assert (await client.get("/api/v1/leads/hubspot/H1")).status_code == 200


# --- /slas ----------------------------------------------------------------------------------


def key(item: dict[str, Any]) -> tuple[str, str, int]:
    return (item["lead"]["id"], item["policy"], item["cycle"])


SLA_FILTERS: list[tuple[dict[str, str], set[tuple[str, str]]]] = [
    ({"policy": "business-touch"}, {("M1", "business-touch"), ("R2", "business-touch")}),
    ({"state": "breached"}, {("B1", "first-touch")}),
    ({"state": "paused"}, {("P1", "first-touch")}),
    ({"state": "met"}, {("M1", "first-touch"), ("M1", "business-touch")}),
    ({"state": "running", "team": "latam"}, {("R2", "first-touch"), ("R2", "business-touch")}),
    ({"owner": "rep-7"}, {("B1", "first-touch"), ("R1", "first-touch")}),
    ({"open": "false"}, {("M1", "first-touch"), ("M1", "business-touch")}),
    (
        {"open": "true", "owner": "rep-9"},
        {("R2", "first-touch"), ("R2", "business-touch"), ("H1", "first-touch")},
    ),
    (
        {"due_before": "2026-11-23T12:30:00Z"},
        {("B1", "first-touch"), ("M1", "first-touch"), ("R1", "first-touch")},
    ),
    (
        {"due_before": "2026-11-23T09:30:00-03:00", "state": "running"},
        {("R1", "first-touch")},
    ),
]


async def test_sla_filters(client: httpx.AsyncClient, population: datetime) -> None:
    for params, expected in SLA_FILTERS:
        page = await get(client, "/api/v1/slas", **params)
        found = {(item["lead"]["id"], item["policy"]) for item in page["items"]}
        assert found == expected, params


async def test_slas_are_ordered_by_deadline_and_paginate_without_gaps(
    client: httpx.AsyncClient, population: datetime
) -> None:
    everything = (await get(client, "/api/v1/slas"))["items"]
    assert len(everything) == 8
    dues = [item["due_at"] for item in everything]
    known = [d for d in dues if d is not None]
    assert known == sorted(known)
    assert dues[len(known) :] == [None]  # the paused cycle, whose deadline is unknown, last
    # M1's business-touch and R2's share 10:00 in São Paulo: a tie the cursor has to break
    assert dues.count(z(population + HOUR)) == 2
    for limit in (1, 2, 3, 4, 8):
        walked = await walk(client, "/api/v1/slas", limit=limit)
        assert [key(i) for i in walked] == [key(i) for i in everything], limit


async def test_slas_without_a_deadline_paginate_by_id_after_the_dated_ones(
    client: httpx.AsyncClient, population: datetime
) -> None:
    """Three more leads paused before their deadline could be known: four undated cycles in
    all, walked across the boundary from the dated part of the queue and within the undated."""
    t = population
    posted = await post_events(
        client, t,
        *(status(f"q{n}", f"Q{n}", t - 10 * MIN, "mql", owner="rep-8") for n in range(3)),
        *(status(f"w{n}", f"Q{n}", t - 5 * MIN, "waiting_on_lead") for n in range(3)),
    )  # fmt: skip
    assert posted.status_code == 202
    everything = (await get(client, "/api/v1/slas"))["items"]
    undated = [key(item) for item in everything if item["due_at"] is None]
    assert len(undated) == 4 and [item["due_at"] for item in everything[-4:]] == [None] * 4
    for limit in (1, 2, 3, 5):
        walked = await walk(client, "/api/v1/slas", limit=limit)
        assert [key(i) for i in walked] == [key(i) for i in everything], limit


async def test_naive_due_before_is_422(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/slas", params={"due_before": "2026-11-23T13:00:00"})
    assert response.status_code == 422


# --- API keys -------------------------------------------------------------------------------


@pytest.fixture
async def keyed(
    settings: Settings, clock: FrozenClock
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with running_app(settings, clock, api_keys="r1:read,a1:admin") as pair:
        yield pair


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_api_keys_and_scopes(keyed: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = keyed
    for url in ("/api/v1/leads", "/api/v1/slas", "/api/v1/policies"):
        missing = await client.get(url)
        assert missing.status_code == 401, url
        assert missing.headers["www-authenticate"] == "Bearer"
        assert (await client.get(url, headers=bearer("nope"))).status_code == 401
        assert (await client.get(url, headers={"authorization": "Basic cjE6"})).status_code == 401
        assert (await client.get(url, headers=bearer("r1"))).status_code == 200
        assert (await client.get(url, headers=bearer("a1"))).status_code == 200
    reload = "/api/v1/policies/reload"
    assert (await client.post(reload)).status_code == 401
    forbidden = await client.post(reload, headers=bearer("r1"))
    assert forbidden.status_code == 403
    assert "admin" in forbidden.json()["detail"]
    assert (await client.post(reload, headers=bearer("a1"))).status_code == 200
    # probes and scrapes need no key
    for url in ("/healthz", "/readyz", "/metrics"):
        assert (await client.get(url)).status_code == 200, url


# --- probes, metrics, OpenAPI ---------------------------------------------------------------


async def test_healthz_and_readyz(client: httpx.AsyncClient) -> None:
    assert (await get(client, "/healthz")) == {"status": "ok"}
    ready = await get(client, "/readyz")
    assert ready["status"] == "ready"
    assert ready["checks"]["database"] == "ok"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+asyncpg://postgres@127.0.0.1:1/none",
        "sqlite+aiosqlite:////nonexistent-lead-sla-dir/lead-sla.db",
    ],
)
async def test_readyz_is_503_when_the_database_is_unreachable(
    settings: Settings, clock: FrozenClock, url: str
) -> None:
    async with running_app(settings, clock, database_url=url) as (_, client):
        assert (await client.get("/healthz")).status_code == 200  # the process is up
        response = await client.get("/readyz")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "not ready"
        assert body["checks"]["database"].startswith("unreachable")
        listing = await client.get("/api/v1/leads")
        assert listing.status_code == 503
        assert listing.headers["retry-after"]
    # aiosqlite's thread of a connection that failed to open answers after its caller gave up;
    # let it finish while this test's event loop is still open to take the answer.
    for thread in threading.enumerate():
        if "_connection_worker_thread" in thread.name:
            thread.join(timeout=5)


CONTRACT_METRICS = (
    "lead_sla_webhook_requests_total", "lead_sla_events_total",
    "lead_sla_webhook_duration_seconds", "lead_sla_cycles_started_total",
    "lead_sla_cycles_met_total", "lead_sla_cycles_breached_total",
    "lead_sla_time_to_stop_business_seconds", "lead_sla_reminders_total",
    "lead_sla_open_cycles", "lead_sla_timer_fire_lag_seconds", "lead_sla_notifications_total",
    "lead_sla_outbox_pending",
)  # fmt: skip


async def test_metrics_exposes_the_contract_metrics(
    client: httpx.AsyncClient, runtime: Runtime, population: datetime
) -> None:
    await refresh_gauges(runtime.sessions, population)
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in CONTRACT_METRICS:
        assert f"# TYPE {name} " in text, name
    assert 'lead_sla_webhook_requests_total{outcome="accepted",source="generic"}' in text
    # the database-derived gauges hold what the database holds
    assert sample("lead_sla_open_cycles", policy="first-touch", state="running") == 3
    assert sample("lead_sla_open_cycles", policy="first-touch", state="breached") == 1
    assert sample("lead_sla_open_cycles", policy="first-touch", state="paused") == 1
    assert sample("lead_sla_outbox_pending", channel="webhook") == 3  # B1: breach, escalation;
    # R1: its 50% reminder
    for label in ("rep-7", "B1", "R1"):  # no lead or owner ids in labels
        assert f'"{label}"' not in text


async def test_openapi_lists_the_endpoints(client: httpx.AsyncClient) -> None:
    document = await get(client, "/openapi.json")
    paths = document["paths"]
    for path, method in [
        ("/webhooks/{source}", "post"),
        ("/api/v1/leads", "get"),
        ("/api/v1/leads/{source}/{lead_id}", "get"),
        ("/api/v1/slas", "get"),
        ("/api/v1/policies", "get"),
        ("/api/v1/policies/reload", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ]:
        assert method in paths.get(path, {}), path
    slas_params = {p["name"] for p in paths["/api/v1/slas"]["get"]["parameters"]}
    assert {"policy", "state", "owner", "team", "due_before", "open", "cursor"} <= slas_params
    assert "HTTPBearer" in document["components"]["securitySchemes"]
    assert (await client.get("/docs")).status_code == 200


# --- policy reload --------------------------------------------------------------------------


@pytest.fixture
def policy_copy(tmp_path: Path) -> Path:
    target = tmp_path / "policies.yaml"
    shutil.copy(FIXTURES / "policies.yaml", target)
    return target


async def test_reload_applies_to_cycles_started_afterwards_and_refuses_a_broken_file(
    settings: Settings, clock: FrozenClock, policy_copy: Path
) -> None:
    async with running_app(settings, clock, policy_file=str(policy_copy), api_keys="a1:admin") as (
        app,
        client,
    ):
        runtime: Runtime = app.state.runtime
        admin = bearer("a1")
        t = clock.now()
        await post_events(client, t, status("o1", "OLD", t, "mql"))
        before = (await client.get("/api/v1/policies", headers=admin)).json()["version"]

        text = policy_copy.read_text()
        policy_copy.write_text(text.replace("target: 1h\n    targets", "target: 2h\n    targets"))
        reloaded = await client.post("/api/v1/policies/reload", headers=admin)
        assert reloaded.status_code == 200, reloaded.text
        version = reloaded.json()["version"]
        assert version != before
        assert (await client.get("/api/v1/policies", headers=admin)).json()["version"] == version

        clock.advance(minutes=5)
        await post_events(client, clock.now(), status("n1", "NEW", clock.now(), "mql"),
                          status("o2", "OLD", clock.now(), "waiting_on_lead"),
                          status("o3", "OLD", clock.now() + MIN, "mql"))  # fmt: skip
        by_lead = {c.lead_id: c for c in await rows(runtime, Cycle)}
        old, new = by_lead[1], by_lead[2]
        assert (old.target_seconds, old.policy_version) == (3600, before)
        assert old.due_at == t + HOUR + MIN  # re-derived after the pause, still on its 1h
        assert (new.target_seconds, new.policy_version) == (7200, version)
        assert new.due_at == clock.now() + 2 * HOUR

        policy_copy.write_text(text.replace("target: 1h\n    targets", "target: soon\n    targets"))
        refused = await client.post("/api/v1/policies/reload", headers=admin)
        assert refused.status_code == 422
        errors = refused.json()["detail"]["errors"]
        assert errors and all(str(policy_copy) in e for e in errors)
        assert runtime.policies.current.version == version
        policy_copy.unlink()
        assert (await client.post("/api/v1/policies/reload", headers=admin)).status_code == 422
        assert runtime.policies.current.version == version
        await post_events(client, clock.now(), status("n2", "NEWER", clock.now(), "mql"))
        newer = [c for c in await rows(runtime, Cycle) if c.lead_id == 3]
        assert [c.target_seconds for c in newer] == [7200]


async def test_reads_answer_while_a_write_transaction_is_open(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime
) -> None:
    """An ingest or a sweep batch in progress holds SQLite's write lock; reads answer from the
    last committed state meanwhile instead of queueing behind it for the busy timeout."""
    t = clock.now()
    await post_events(client, t, status("e1", "L-1", t, "mql", owner="rep-7", team="emea"))
    async with runtime.sessions() as writer, writer.begin():
        await writer.execute(update(Lead).values(owner="rep-8"))  # not committed yet
        for url in (
            "/api/v1/leads",
            "/api/v1/leads/generic/L-1",
            "/api/v1/leads/generic/L-1/slas/first-touch/explain",
            "/api/v1/slas",
            "/api/v1/outbox",
            "/api/v1/reports/compliance",
        ):
            response = await asyncio.wait_for(client.get(url), 5)
            assert response.status_code == 200, (url, response.text)
        (lead,) = (await get(client, "/api/v1/leads"))["items"]
        assert lead["owner"] == "rep-7"
        await asyncio.wait_for(refresh_gauges(runtime.reads, t), 5)
        assert sample("lead_sla_open_cycles", policy="first-touch", state="running") == 1
