"""CONTRACT.md §2 for the generic source: every answer, and that nothing is stored when the
answer says so."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from service.clock import FrozenClock
from service.config import Settings
from service.models import Cycle, Lead, LeadEventRow
from service.runtime import Runtime
from tests.helpers import activity, event, post_events, signed_headers, status
from tests.store import count, rows, running_app, sample, table_counts

EMPTY = {"leads": 0, "lead_events": 0, "raw_requests": 0, "sla_cycles": 0, "outbox": 0}
REQUESTS = "lead_sla_webhook_requests_total"


def requests_metric(outcome: str) -> float:
    return sample(REQUESTS, source="generic", outcome=outcome)


def body_of(payload: Any) -> bytes:
    return json.dumps(payload).encode()


async def post_raw(
    client: httpx.AsyncClient, body: bytes, headers: dict[str, str]
) -> httpx.Response:
    return await client.post("/webhooks/generic", content=body, headers=headers)


@pytest.fixture
def runtime(app: FastAPI) -> Runtime:
    result: Runtime = app.state.runtime
    return result


# --- accepted -------------------------------------------------------------------------------


async def test_single_event_is_stored_and_answered_202(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime
) -> None:
    before = requests_metric("accepted")
    one = status("e1", "L-1", clock.now() - timedelta(minutes=1), "mql", owner="rep-7")
    response = await post_events(client, clock.now(), one, batch=False)
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 1, "duplicates": 0}
    assert await table_counts(runtime) == {**EMPTY, "leads": 1, "lead_events": 1,
                                           "raw_requests": 1, "sla_cycles": 1}  # fmt: skip
    (lead,) = await rows(runtime, Lead)
    assert (lead.source, lead.external_id, lead.status, lead.owner) == ("generic", "L-1", "mql",
                                                                        "rep-7")  # fmt: skip
    assert requests_metric("accepted") == before + 1


async def test_batch_is_stored_in_one_go(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime
) -> None:
    at = clock.now() - timedelta(minutes=5)
    response = await post_events(
        client, clock.now(),
        status("e1", "L-1", at, "mql", team="emea"),
        activity("e2", "L-1", at + timedelta(minutes=1)),
        status("e3", "L-2", at, "mql", team="emea"),
    )  # fmt: skip
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 3, "duplicates": 0}
    assert await count(runtime, LeadEventRow) == 3
    assert await count(runtime, Lead) == 2
    first_touch = {c.lead_id: c.state for c in await rows(runtime, Cycle)
                   if c.policy_id == "first-touch"}  # fmt: skip
    assert sorted(first_touch.values()) == ["met", "running"]


async def test_occurred_at_offsets_are_stored_as_utc(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime
) -> None:
    one = status("e1", "L-1", clock.now(), "mql")
    one["occurred_at"] = "2026-11-23T08:30:00-03:00"
    assert (await post_events(client, clock.now(), one)).status_code == 202
    (row,) = await rows(runtime, LeadEventRow)
    assert row.occurred_at.isoformat() == "2026-11-23T11:30:00+00:00"


# --- duplicates -----------------------------------------------------------------------------


async def test_redelivery_is_counted_and_applied_once(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime
) -> None:
    at = clock.now() - timedelta(minutes=10)
    first = status("e1", "L-1", at, "mql", owner="rep-7")
    assert (await post_events(client, clock.now(), first)).json() == {"accepted": 1,
                                                                       "duplicates": 0}  # fmt: skip
    cycles_before = [(c.id, c.state, c.due_at, c.updated_at) for c in await rows(runtime, Cycle)]
    duplicates_before = requests_metric("duplicate")

    clock.advance(minutes=1)
    # The same event id again, even with other content, is the same event: the first copy wins.
    again = status("e1", "L-1", at, "sal", owner="rep-9")
    response = await post_events(client, clock.now(), again)
    assert response.status_code == 202
    assert response.json() == {"accepted": 0, "duplicates": 1}
    assert requests_metric("duplicate") == duplicates_before + 1
    assert await count(runtime, LeadEventRow) == 1
    (lead,) = await rows(runtime, Lead)
    assert (lead.status, lead.owner) == ("mql", "rep-7")
    after = [(c.id, c.state, c.due_at, c.updated_at) for c in await rows(runtime, Cycle)]
    assert after == cycles_before

    # A batch mixing a redelivered event and a new one stores only the new one.
    response = await post_events(
        client, clock.now(), first, activity("e2", "L-1", at + timedelta(minutes=2))
    )
    assert response.json() == {"accepted": 1, "duplicates": 1}
    assert await count(runtime, LeadEventRow) == 2


async def test_duplicate_inside_one_batch(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime
) -> None:
    at = clock.now() - timedelta(minutes=10)
    response = await post_events(
        client, clock.now(),
        status("e1", "L-1", at, "mql", owner="rep-7"),
        status("e1", "L-1", at, "sal", owner="rep-9"),
    )  # fmt: skip
    assert response.status_code == 202
    assert response.json() == {"accepted": 1, "duplicates": 1}
    (row,) = await rows(runtime, LeadEventRow)
    assert row.data["status"]["to"] == "mql"  # the first copy, as for a redelivery
    (lead,) = await rows(runtime, Lead)
    assert (lead.status, lead.owner) == ("mql", "rep-7")


# --- authentication -------------------------------------------------------------------------


def _valid(clock: FrozenClock) -> bytes:
    return body_of(status("e1", "L-1", clock.now(), "mql"))


async def _assert_unauthorized(response: httpx.Response, runtime: Runtime, says: str) -> None:
    assert response.status_code == 401, response.text
    assert says in response.json()["error"]
    assert await table_counts(runtime) == EMPTY


async def test_bad_signature_is_401_and_stores_nothing(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime
) -> None:
    before = requests_metric("unauthorized")
    body = _valid(clock)
    headers = signed_headers(body, clock.now())
    tampered = body.replace(b"mql", b"sal")
    await _assert_unauthorized(await post_raw(client, tampered, headers), runtime, "signature")
    wrong_secret = signed_headers(body, clock.now(), secret="whsec_" + "A" * 40)
    await _assert_unauthorized(await post_raw(client, body, wrong_secret), runtime, "signature")
    assert requests_metric("unauthorized") == before + 2


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
async def test_missing_header_is_401(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime, missing: str
) -> None:
    body = _valid(clock)
    headers = signed_headers(body, clock.now())
    del headers[missing]
    await _assert_unauthorized(await post_raw(client, body, headers), runtime, "missing")


async def test_timestamp_tolerance_is_five_minutes_of_the_service_clock(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime
) -> None:
    body = _valid(clock)
    stale = signed_headers(body, clock.now() - timedelta(seconds=301))
    await _assert_unauthorized(await post_raw(client, body, stale), runtime, "old")
    future = signed_headers(body, clock.now() + timedelta(seconds=301))
    await _assert_unauthorized(await post_raw(client, body, future), runtime, "future")
    edge = signed_headers(body, clock.now() - timedelta(seconds=300))
    assert (await post_raw(client, body, edge)).status_code == 202


async def test_timestamp_tolerance_follows_the_setting(
    settings: Settings, clock: FrozenClock
) -> None:
    async with running_app(settings, clock, webhook_tolerance_seconds=60) as (app, client):
        body = _valid(clock)
        stale = signed_headers(body, clock.now() - timedelta(seconds=61))
        await _assert_unauthorized(await post_raw(client, body, stale), app.state.runtime, "60s")
        fresh = signed_headers(body, clock.now() - timedelta(seconds=60))
        assert (await post_raw(client, body, fresh)).status_code == 202


async def test_no_secret_configured_is_401_saying_so(
    settings: Settings, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LEAD_SLA_WEBHOOK_SECRET_GENERIC", raising=False)
    overrides = {k: v for k, v in settings.env_overrides.items() if "GENERIC" not in k}
    async with running_app(settings, clock, env_overrides=overrides) as (app, client):
        body = _valid(clock)
        response = await post_raw(client, body, signed_headers(body, clock.now()))
        await _assert_unauthorized(response, app.state.runtime, "LEAD_SLA_WEBHOOK_SECRET_GENERIC")
        assert "no secret configured" in response.json()["error"]


# --- malformed and oversized bodies ---------------------------------------------------------


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe", b""])
async def test_body_not_json_is_400_with_a_json_error(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime, body: bytes
) -> None:
    before = requests_metric("invalid")
    response = await post_raw(client, body, signed_headers(body, clock.now()))
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert "JSON" in response.json()["error"]
    assert await table_counts(runtime) == EMPTY
    assert requests_metric("invalid") == before + 1


@pytest.fixture
async def small_limit(
    settings: Settings, clock: FrozenClock
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with running_app(settings, clock, max_body_bytes=1024) as pair:
        yield pair


def _padded(clock: FrozenClock, size: int) -> bytes:
    """A valid single event exactly ``size`` bytes long."""
    one = status("e1", "L-1", clock.now(), "mql")
    one["lead"]["attributes"] = {"pad": ""}
    shortfall = size - len(body_of(one))
    one["lead"]["attributes"]["pad"] = "x" * shortfall
    body = body_of(one)
    assert len(body) == size
    return body


async def test_body_over_the_limit_is_413_with_content_length(
    small_limit: tuple[FastAPI, httpx.AsyncClient], clock: FrozenClock
) -> None:
    app, client = small_limit
    before = requests_metric("too_large")
    body = _padded(clock, 1025)
    response = await post_raw(client, body, signed_headers(body, clock.now()))
    assert response.status_code == 413
    assert "1024" in response.json()["error"]
    assert await table_counts(app.state.runtime) == EMPTY
    assert requests_metric("too_large") == before + 1

    at_limit = _padded(clock, 1024)
    response = await post_raw(client, at_limit, signed_headers(at_limit, clock.now()))
    assert response.status_code == 202, response.text


async def test_streamed_body_over_the_limit_is_413(
    small_limit: tuple[FastAPI, httpx.AsyncClient], clock: FrozenClock
) -> None:
    app, client = small_limit
    body = _padded(clock, 4000)
    headers = signed_headers(body, clock.now())
    seen: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 500):
            seen.append(start)
            yield body[start : start + 500]

    request = client.build_request("POST", "/webhooks/generic", content=chunks(), headers=headers)
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    response = await client.send(request)
    assert response.status_code == 413
    assert await table_counts(app.state.runtime) == EMPTY


# --- invalid events (422) -------------------------------------------------------------------


async def _assert_422(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime, payload: Any
) -> list[dict[str, Any]]:
    body = body_of(payload)
    response = await post_raw(client, body, signed_headers(body, clock.now()))
    assert response.status_code == 422, response.text
    errors: list[dict[str, Any]] = response.json()["errors"]
    assert errors and all(set(e) == {"index", "field", "message"} for e in errors)
    assert await table_counts(runtime) == EMPTY
    return errors


async def test_one_bad_event_rejects_the_whole_batch(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime
) -> None:
    before = requests_metric("invalid")
    good = status("e1", "L-1", clock.now(), "mql")
    bad = status("e2", "L-2", clock.now(), "mql")
    del bad["lead"]["id"]
    errors = await _assert_422(
        client, clock, runtime, {"events": [good, bad, status("e3", "L-3", clock.now(), "mql")]}
    )
    assert [(e["index"], e["field"]) for e in errors] == [(1, "lead.id")]
    assert requests_metric("invalid") == before + 1


async def test_naive_occurred_at_is_422(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime
) -> None:
    naive = status("e1", "L-1", clock.now(), "mql")
    naive["occurred_at"] = "2026-11-23T14:05:00"
    (error,) = await _assert_422(client, clock, runtime, naive)
    assert (error["index"], error["field"]) == (0, "occurred_at")
    assert "offset" in error["message"]


async def test_unknown_type_is_422(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime
) -> None:
    odd = event("e1", "L-1", clock.now(), "lead.exploded")
    errors = await _assert_422(client, clock, runtime, {"events": [odd]})
    assert [(e["index"], e["field"]) for e in errors] == [(0, "type")]


@pytest.mark.parametrize(
    ("kind", "part"),
    [("lead.status_changed", "status"), ("lead.assigned", "owner"), ("lead.activity", "activity")],
)
async def test_typed_event_without_its_part_is_422_naming_the_field(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime, kind: str, part: str
) -> None:
    good = activity("e0", "L-1", clock.now())
    partless = event("e1", "L-1", clock.now(), kind)
    errors = await _assert_422(client, clock, runtime, {"events": [good, partless]})
    assert [(e["index"], e["field"]) for e in errors] == [(1, part)]
    assert part in errors[0]["message"]


async def test_more_than_1000_events_is_422(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime
) -> None:
    many = [activity(f"e{i}", f"L-{i % 7}", clock.now()) for i in range(1001)]
    (error,) = await _assert_422(client, clock, runtime, {"events": many})
    assert error["field"] == "events"
    assert "1000" in error["message"]
    # exactly 1000 is allowed
    response = await post_events(client, clock.now(), *many[:1000])
    assert response.json() == {"accepted": 1000, "duplicates": 0}


@pytest.mark.parametrize("payload", [[], {"events": []}, {"events": "nope"}, "text", 7])
async def test_body_that_is_no_event_is_422(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime, payload: Any
) -> None:
    await _assert_422(client, clock, runtime, payload)


async def test_text_with_the_nul_character_is_422_naming_each_field(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime
) -> None:
    good = status("e1", "L-1", clock.now(), "mql", owner="rep-7")
    bad = status("e2", "L-2", clock.now(), "mql", owner="rep\x007",
                 attributes={"plan": ["pro", "x\x00"], "k\x00ey": 1})  # fmt: skip
    errors = await _assert_422(client, clock, runtime, {"events": [good, bad]})
    assert [(e["index"], e["field"]) for e in errors] == [
        (1, "lead.owner"), (1, "lead.attributes.plan[1]"), (1, "lead.attributes.k\x00ey"),
    ]  # fmt: skip
    assert "NUL" in errors[0]["message"]


async def test_an_escaped_backslash_before_u0000_is_plain_text(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime
) -> None:
    literal = status("e1", "L-1", clock.now(), "mql", owner="rep\\u0000")
    response = await post_events(client, clock.now(), literal)
    assert response.status_code == 202, response.text
    (lead,) = await rows(runtime, Lead)
    assert lead.owner == "rep\\u0000"


# --- database down, unknown source ----------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+asyncpg://postgres@127.0.0.1:1/none",
        "sqlite+aiosqlite:////nonexistent-lead-sla-dir/lead-sla.db",
    ],
)
async def test_database_unavailable_is_503_with_retry_after(
    settings: Settings, clock: FrozenClock, url: str
) -> None:
    before = requests_metric("unavailable")
    assert not Path("/nonexistent-lead-sla-dir").exists()
    async with running_app(settings, clock, database_url=url) as (_app, client):
        response = await post_events(client, clock.now(), status("e1", "L-1", clock.now(), "mql"))
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) > 0
    assert "accepted" not in response.json()
    assert requests_metric("unavailable") == before + 1


async def test_unknown_source_is_404(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime
) -> None:
    body = _valid(clock)
    response = await client.post(
        "/webhooks/nosuchcrm", content=body, headers=signed_headers(body, clock.now())
    )
    assert response.status_code == 404
    assert "nosuchcrm" in response.json()["error"]
    assert await table_counts(runtime) == EMPTY
