"""Attempts, volume, explain, backtest and recompute through the real pipeline and database."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from service.clock import FrozenClock
from service.config import Settings
from service.models import Cycle, OutboxMessage
from service.notify.dispatcher import dispatch
from service.runtime import Runtime
from service.sweep import sweep
from service.volume_jobs import evaluate_volume
from tests.conftest import FIXTURES, GENERIC_SECRET, RECEIVER_SECRET, Receiver
from tests.helpers import activity, post_events, status

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # Monday 09:00 in São Paulo


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    target = tmp_path / "policies.yaml"
    shutil.copy(FIXTURES / "policies_full.yaml", target)
    return target


@pytest.fixture
def settings(database_url: str, receiver: Receiver, policy_file: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=database_url,
        policy_file=str(policy_file),
        env_overrides={
            "LEAD_SLA_WEBHOOK_SECRET_GENERIC": GENERIC_SECRET,
            "RECEIVER_URL": receiver.url,
            "RECEIVER_SECRET": RECEIVER_SECRET,
        },
    )


async def tick(runtime: Runtime) -> None:
    await sweep(runtime.sessions, runtime.clock.now(), runtime.policies.current)
    await dispatch(runtime.sessions, runtime.http, runtime.clock, runtime.policies.current,
                   runtime.retry)  # fmt: skip


async def cycles(runtime: Runtime, policy: str) -> list[Cycle]:
    async with runtime.sessions() as session:
        rows = await session.scalars(
            select(Cycle).where(Cycle.policy_id == policy).order_by(Cycle.lead_id, Cycle.number)
        )
        return list(rows)


async def get(client: httpx.AsyncClient, url: str, **params: Any) -> Any:
    response = await client.get(url, params=params)
    assert response.status_code == 200, response.text
    return response.json()


# -- attempts ---------------------------------------------------------------------------------


async def test_attempts_met_premature_and_window_breach(
    app: FastAPI, client: httpx.AsyncClient, clock: FrozenClock, receiver: Receiver
) -> None:
    runtime: Runtime = app.state.runtime
    h = timedelta(hours=1)
    events = [
        # A: three calls within the window -> met at the third
        status("a1", "A", T0, "sal", owner="rep-1"),
        activity("a2", "A", T0 + h), activity("a3", "A", T0 + 2 * h, "email"),
        activity("a4", "A", T0 + 3 * h, "whatsapp"),
        # B: disqualified after two attempts -> breached at once (premature disposition)
        status("b1", "B", T0, "sal", owner="rep-2"),
        activity("b2", "B", T0 + h), activity("b3", "B", T0 + 2 * h),
        status("b4", "B", T0 + 3 * h, "disqualified"),
        # C: one attempt, then the 2-day window runs out
        status("c1", "C", T0, "sal", owner="rep-1"), activity("c2", "C", T0 + h),
    ]  # fmt: skip
    clock.set(T0 + 4 * h)
    response = await post_events(client, clock.now(), *events)
    assert response.json() == {"accepted": len(events), "duplicates": 0}

    by_lead = {c.lead_id: c for c in await cycles(runtime, "attempts")}
    a, b, c = (by_lead[i] for i in sorted(by_lead))
    assert (a.state, a.attempts, a.stopped_at) == ("met", 3, T0 + 3 * h)
    assert (b.state, b.attempts, b.breached_at) == ("breached", 2, T0 + 3 * h)
    assert "disposed as disqualified after 2 attempt(s)" in b.details["stop_reason"]
    assert (c.state, c.attempts, c.due_at) == ("running", 1, T0 + timedelta(days=2))

    detail = await get(client, "/api/v1/leads/generic/C")
    attempts_cycle = next(x for x in detail["cycles"] if x["policy"] == "attempts")
    assert (attempts_cycle["attempts"], attempts_cycle["required"]) == (1, 3)

    clock.set(T0 + timedelta(days=2, seconds=1))
    await tick(runtime)
    breaches = [b for b in receiver.bodies() if b["type"] == "sla.breached"]
    assert [(x["policy"], x["lead"]["id"]) for x in breaches] == [("attempts", "C")]
    assert breaches[0]["sla"]["attempts"] == 1
    c_after = next(x for x in await cycles(runtime, "attempts") if x.id == c.id)
    assert c_after.state == "breached"


# -- volume -----------------------------------------------------------------------------------


async def test_volume_pace_at_risk_and_missed_at_period_rollover(
    app: FastAPI, client: httpx.AsyncClient, clock: FrozenClock, receiver: Receiver
) -> None:
    runtime: Runtime = app.state.runtime
    nov = datetime(2026, 11, 2, 12, tzinfo=UTC)
    events = [
        status("v2", "V2", nov + timedelta(days=1), "mql", owner="rep-2"),
        status("v3", "V3", nov + timedelta(days=2), "mql", owner="rep-1"),
        # recycled and back to MQL: a second entry counts again
        status("v4", "V3", nov + timedelta(days=3), "recycled"),
        status("v5", "V3", nov + timedelta(days=4), "mql"),
        status("v6", "V9", datetime(2026, 10, 30, tzinfo=UTC), "mql", owner="rep-1"),  # October
    ]
    await post_events(client, clock.now(), *events)

    # 2026-11-16 00:00 UTC: half of November has passed
    clock.set(datetime(2026, 11, 16, tzinfo=UTC))
    report = await get(client, "/api/v1/reports/volume")
    groups = report["policies"][0]["groups"]
    assert (groups["rep-1"]["count"], groups["rep-1"]["target"]) == (2, 4)
    assert groups["rep-1"]["pace"] == "on pace for 4 of 4"
    assert (groups["rep-2"]["count"], groups["rep-2"]["target"]) == (1, 1)
    assert "mgr-1" not in groups  # a manager is not a rep
    # At the half-way point nobody is projected short; October's misses are due, though.
    assert await evaluate_volume(runtime.sessions, runtime.policies.current, clock.now()) == 2
    await tick(runtime)
    october = [b for b in receiver.bodies() if b["type"] == "sla.volume_missed"]
    assert sorted((b["group"]["value"], b["volume"]["count"]) for b in october) == [
        ("rep-1", 1), ("rep-2", 0),
    ]  # fmt: skip
    assert {b["period"]["start"][:10] for b in october} == {"2026-10-01"}
    receiver.requests.clear()

    # 2026-11-23: 73% of the month gone, rep-1 at 2 of 4 is on pace for 3 -> at risk, once.
    clock.set(datetime(2026, 11, 23, tzinfo=UTC))
    first = await evaluate_volume(runtime.sessions, runtime.policies.current, clock.now())
    again = await evaluate_volume(runtime.sessions, runtime.policies.current, clock.now())
    assert first == again == 3  # rep-1 at risk + October's two, offered again, stored once
    await tick(runtime)
    at_risk = [b for b in receiver.bodies() if b["type"] == "sla.volume_at_risk"]
    assert [(b["group"]["value"], b["recipient"]) for b in at_risk] == [("rep-1", "rep-1")]
    assert at_risk[0]["volume"]["pace"] == "on pace for 3 of 4"
    assert len(receiver.requests) == 1

    # Period rollover: November closes with rep-1 at 2 of 4 -> missed, to the manager.
    clock.set(datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC))
    await evaluate_volume(runtime.sessions, runtime.policies.current, clock.now())
    await tick(runtime)
    missed = [b for b in receiver.bodies() if b["type"] == "sla.volume_missed"]
    assert [(b["group"]["value"], b["recipient"], b["period"]["start"][:10]) for b in missed] == [
        ("rep-1", "mgr-1", "2026-11-01"),
    ]
    december = await get(client, "/api/v1/reports/volume")
    assert december["policies"][0]["groups"]["rep-1"]["count"] == 0


# -- explain ----------------------------------------------------------------------------------


async def test_explain_names_holiday_weekend_and_pause_and_sums_exactly(
    app: FastAPI, client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    # Thursday 2026-11-19 17:00 in São Paulo; Friday the 20th is Black Consciousness Day (a
    # national holiday); the 2h target runs 17:00-18:00 Thursday, then 09:00-10:00 Monday.
    thursday_17 = datetime(2026, 11, 19, 20, 0, tzinfo=UTC)
    await post_events(client, clock.now(), status("x1", "X", thursday_17, "mql", owner="rep-1"))
    clock.set(datetime(2026, 11, 23, 12, 30, tzinfo=UTC))  # Monday 09:30 local
    data = await get(client, "/api/v1/leads/generic/X/slas/first-touch/explain")
    assert data["due_at"] == "2026-11-23T13:00:00Z"
    counted = [i for i in data["intervals"] if i["counted"]]
    assert sum(i["seconds"] for i in counted) == data["elapsed_business_seconds"] == 5400
    assert data["remaining_business_seconds"] == 1800
    reasons = [i["reason"] for i in data["intervals"]]
    assert any(r.startswith("holiday: ") for r in reasons), reasons
    assert "weekend" in reasons and "outside business hours" in reasons
    assert data["intervals"][0]["start"] == "2026-11-19T20:00:00Z"
    assert data["intervals"][-1]["end"] == "2026-11-23T12:30:00Z"

    # A pause from 09:10 to 09:20 Monday moves the deadline by ten minutes.
    await post_events(
        client, clock.now(),
        status("x2", "X", datetime(2026, 11, 23, 12, 10, tzinfo=UTC), "waiting_on_lead"),
        status("x3", "X", datetime(2026, 11, 23, 12, 20, tzinfo=UTC), "mql"),
    )  # fmt: skip
    data = await get(client, "/api/v1/leads/generic/X/slas/first-touch/explain")
    assert data["due_at"] == "2026-11-23T13:10:00Z"
    paused = [i for i in data["intervals"] if i["reason"].startswith("paused")]
    assert [(p["start"], p["seconds"]) for p in paused] == [("2026-11-23T12:10:00Z", 600)]
    assert "event x2" in paused[0]["reason"]
    counted_total = sum(i["seconds"] for i in data["intervals"] if i["counted"])
    assert counted_total == data["elapsed_business_seconds"] == 4800
    stored = (await cycles(app.state.runtime, "first-touch"))[0]
    assert stored.elapsed_business_seconds == pytest.approx(4800)

    missing = await client.get("/api/v1/leads/generic/X/slas/nope/explain")
    assert missing.status_code == 404


# -- backtest and recompute -------------------------------------------------------------------


async def test_backtest_tighter_target_turns_met_into_breached_without_writing(
    app: FastAPI, client: httpx.AsyncClient, clock: FrozenClock, policy_file: Path
) -> None:
    runtime: Runtime = app.state.runtime
    events = []
    for i, minutes in enumerate((30, 90, 100, 150)):  # first touch after N business minutes
        events += [status(f"m{i}", f"B{i}", T0, "mql", owner="rep-1", team="emea"),
                   activity(f"c{i}", f"B{i}", T0 + timedelta(minutes=minutes))]  # fmt: skip
    clock.set(T0 + timedelta(hours=6))
    await post_events(client, clock.now(), *events)
    before = [(c.id, c.state, c.due_at) for c in await cycles(runtime, "first-touch")]
    assert [s for _, s, _ in before] == ["met", "met", "met", "breached"]

    candidate = policy_file.read_text().replace("target: 2h", "target: 1h")
    response = await client.post("/api/v1/policies/backtest", json={
        "policies": candidate, "from": "2026-11-23T00:00:00Z", "to": "2026-11-24T00:00:00Z",
    })  # fmt: skip
    assert response.status_code == 200, response.text
    result = response.json()
    current = next(r for r in result["current"]["policies"] if r["policy"] == "first-touch")
    tighter = next(r for r in result["candidate"]["policies"] if r["policy"] == "first-touch")
    assert (current["met"], current["breached"], current["compliance"]) == (3, 1, 0.75)
    assert (tighter["met"], tighter["breached"], tighter["compliance"]) == (1, 3, 0.25)
    assert current["time_to_stop_p50_seconds"] == 90 * 60
    assert result["candidate"]["version"] != result["current"]["version"]

    after = [(c.id, c.state, c.due_at) for c in await cycles(runtime, "first-touch")]
    assert after == before
    async with runtime.sessions() as session:
        assert (await session.scalars(select(OutboxMessage))).all() == []

    bad = await client.post("/api/v1/policies/backtest", json={
        "policies": "policies: [{id: x}]", "from": "2026-11-23T00:00:00Z",
        "to": "2026-11-24T00:00:00Z",
    })  # fmt: skip
    assert bad.status_code == 422

    window = {"from": "2026-11-23T00:00:00Z", "to": "2026-11-24T00:00:00Z"}
    report = await get(client, "/api/v1/reports/compliance", group_by="team", **window)
    row = next(r for r in report["rows"] if r["policy"] == "first-touch")
    assert (row["group"], row["met"], row["breached"], row["compliance"]) == ("emea", 3, 1, 0.75)


async def test_reload_keeps_open_cycles_until_recompute(
    app: FastAPI, client: httpx.AsyncClient, clock: FrozenClock, policy_file: Path
) -> None:
    runtime: Runtime = app.state.runtime
    await post_events(client, clock.now(), status("r1", "R1", T0, "mql", owner="rep-1"))
    old_due = (await cycles(runtime, "first-touch"))[0].due_at
    assert old_due == T0 + timedelta(hours=2)

    policy_file.write_text(policy_file.read_text().replace("target: 2h", "target: 1h"))
    reloaded = await client.post("/api/v1/policies/reload")
    assert reloaded.status_code == 200
    await post_events(client, clock.now(), status("r2", "R2", T0, "mql", owner="rep-1"),
                      activity("r3", "R1", T0 + timedelta(minutes=1), "meeting"))  # fmt: skip
    by_lead = {c.lead_id: c for c in await cycles(runtime, "first-touch")}
    r1, r2 = (by_lead[k] for k in sorted(by_lead))
    assert r1.due_at == old_due  # started before the reload: keeps its 2h
    assert r2.due_at == T0 + timedelta(hours=1)  # started after it

    response = await client.post("/api/v1/policies/recompute")
    assert response.status_code == 200
    assert response.json()["cycles_changed"] == 1
    r1_after = next(c for c in await cycles(runtime, "first-touch") if c.id == r1.id)
    assert r1_after.due_at == T0 + timedelta(hours=1)
    assert r1_after.policy_version == runtime.policies.current.version
