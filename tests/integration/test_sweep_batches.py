"""The sweep against the real database: several sweeps at once, each with several transactions,
fire every due step exactly once; and on PostgreSQL the batch statements (bodies built by the
database) leave cycles and outbox exactly as the row-by-row path does."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select, text

from service.clock import FrozenClock, rfc3339
from service.db import create_engine, session_factory
from service.event_codec import event_from_json
from service.ingest import store_delivery
from service.models import Cycle, OutboxMessage
from service.outbox import pg_rfc3339
from service.policies import PolicyStore
from service.runtime import Runtime, build_runtime
from service.sweep import _fire_batch_rows, _fire_batch_statement, fire_due_batch, sweep
from tests.conftest import PG_URL, Receiver
from tests.helpers import status
from tests.workers import (
    expected_keys,
    read_scalar,
    seed_cycles,
    worker_settings,
    write_policy,
)

N = 300


def _metric_total(name: str, **labels: str) -> float:
    """A counter or histogram series summed over the labels not given."""
    total = 0.0
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def test_sweeps_at_once_with_several_transactions_each_fire_every_step_once(
    database_url: str, receiver: Receiver, tmp_path: Path, clock: FrozenClock
) -> None:
    policy = write_policy(tmp_path)
    now = clock.now()
    await seed_cycles(database_url, policy, receiver, N, now, now + timedelta(minutes=5))
    settings = worker_settings(database_url, policy, receiver)
    one, two = build_runtime(settings, clock), build_runtime(settings, clock)
    breached_before = _metric_total("lead_sla_cycles_breached_total", policy="first-touch")
    lags_before = _metric_total("lead_sla_timer_fire_lag_seconds_count")
    try:
        clock.advance(minutes=6)

        async def sweep_with(runtime: Runtime) -> int:
            # small batches, so every transaction claims several while the others hold theirs
            return await sweep(runtime.sessions, clock.now(), runtime.policies.current,
                               batch_size=7, concurrency=3)  # fmt: skip

        fired = await asyncio.gather(sweep_with(one), sweep_with(two))
        assert sum(fired) == N
        assert await sweep_with(one) + await sweep_with(two) == 0
    finally:
        await one.close()
        await two.close()
    expected, outbox = await expected_keys(database_url)
    assert sorted(m.key for m in outbox) == sorted(expected)  # each breach once, none twice
    assert {(m.type, m.status) for m in outbox} == {("sla.breached", "pending")}
    assert await read_scalar(database_url, "SELECT count(*) FROM sla_cycles") == N
    open_timers = "SELECT count(*) FROM sla_cycles WHERE next_fire_at IS NOT NULL"
    assert await read_scalar(database_url, open_timers) == 0
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            cycles = list(await session.scalars(select(Cycle)))
    finally:
        await engine.dispose()
    assert {(c.state, c.announced_outcome, tuple(c.fired)) for c in cycles} == {
        ("breached", "breached", ("breach",))
    }
    assert all(c.details["outcome_counted"] == "breached" for c in cycles)
    assert all(c.details["start_event_id"] for c in cycles)  # the rest of details is kept
    breached = _metric_total("lead_sla_cycles_breached_total", policy="first-touch")
    assert breached - breached_before == N
    assert _metric_total("lead_sla_timer_fire_lag_seconds_count") - lags_before == N


# --- PostgreSQL's batch statements against the row-by-row path -----------------------------

POLICIES = """\
channels:
  log: {type: log}
  audit: {type: log}
people:
  rep-1: {email: rep-1@example.com, manager: mgr-1}
  rep-2: {email: rep-2@example.com}
  mgr-1: {email: mgr-1@example.com}
teams: [emea]
policies:
  - id: touch
    start: {status: [mql]}
    stop: {activity: [call]}
    target: 1h
    reminders: [{at: 50%}, {before: 10m}]
    escalations: [{after: 0m}, {after: 30m}]
    notify:
      reminder: [{channel: log, to: owner}, {channel: audit, to: mgr-1}]
      breach: [{channel: log, to: owner}, {channel: audit}]
      escalation: [{channel: log, to: manager}, {channel: audit, to: owner}]
  - id: odd
    start: {status: [mql]}
    stop: {activity: [call]}
    target: 433s
    reminders: [{at: 33%}, {at: 71.3%}]
    notify:
      reminder: [{channel: log, to: owner}]
      breach: [{channel: log, to: manager}]
  - id: tie  # a reminder 0.2345 s in, which Python rounds to 0.234
    start: {status: [mql]}
    stop: {activity: [call]}
    target: 200s
    reminders: [{at: 0.11725%}]
    notify:
      reminder: [{channel: log, to: owner}]
"""
# the fourth needs escaping in a JSON body (its leads' CRM ids and teams too)
OWNERS = ("rep-1", "rep-2", "rep-9", 'Zoë "Z" O\\Brien\t\u2028', None)
# minutes since each lead became an MQL when the compared sweep runs
AGES = (1, 3, 5.5, 10, 30.5, 35, 45.5, 55, 59.999, 60, 60.5, 61, 65, 75, 95, 100, 180)


@pytest.fixture
def policy_store(tmp_path: Path) -> Iterator[PolicyStore]:
    path = tmp_path / "policies.yaml"
    path.write_text(POLICIES)
    yield PolicyStore(str(path), {})


@pytest.mark.skipif(not PG_URL, reason="the batch statements are PostgreSQL's")
async def test_batch_statements_write_what_the_row_by_row_path_writes(
    database_url: str, policy_store: PolicyStore, clock: FrozenClock
) -> None:
    policies = policy_store.current
    now = clock.now()
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    try:
        events = []
        for i, age in enumerate(AGES * len(OWNERS)):
            started = now - timedelta(minutes=age, microseconds=(i % 3) * 123_457)
            owner = OWNERS[i // len(AGES)]
            escaped = owner is not None and "\\" in owner
            team = ("emea" if i % 2 else "na") + ('/"\n' if escaped else "")
            lead = {"owner": owner, "team": team} if owner else {}
            crm_id = f"L-{i}" + ('"ü\\' if escaped else "")
            events.append(event_from_json(status(f"e{i}", crm_id, started, "mql", **lead)))
        async with sessions() as session, session.begin():
            await store_delivery(session, "generic", events, None, now, policies)
            # as stored when each lead became an MQL, long before its deadline passed
            await session.execute(text(
                "UPDATE sla_cycles SET state = 'running', breached_at = NULL "
                "WHERE state = 'breached'"
            ))  # fmt: skip
        # an earlier sweep leaves some cycles with steps fired, at risk or breached already
        await sweep(sessions, now - timedelta(minutes=25), policies)
        async with sessions() as session, session.begin():
            # a cycle whose announced breach a late event withdrew is in a new round of notices
            await session.execute(text(
                "UPDATE sla_cycles SET details = CAST(CAST(details AS jsonb) || '{\"round\": 2}' "
                "AS json) WHERE id % 4 = 1"
            ))  # fmt: skip
            # a step in ``fired`` is neither fired again nor waited for
            await session.execute(text(
                "UPDATE sla_cycles SET fired = CAST(CAST(fired AS jsonb) || '[\"escalation-1\"]' "
                "AS json) WHERE policy_id = 'touch' AND lead_id % 3 = 0"
            ))  # fmt: skip
            # an outcome counted already is not counted again
            await session.execute(text(
                "UPDATE sla_cycles SET details = CAST(CAST(details AS jsonb) "
                "|| '{\"outcome_counted\": \"breached\"}' AS json) WHERE id % 5 = 2"
            ))  # fmt: skip

        by_statement: list[int] = []
        tie_cycles = await read_scalar(
            database_url,
            "SELECT count(*) FROM sla_cycles WHERE policy_id = 'tie' AND next_fire_at IS NOT NULL",
        )

        async def outcome(batch_statements: bool) -> tuple[Any, ...]:
            async with sessions() as session, session.begin():
                claimed = fired = 0
                if batch_statements:  # as fire_due_batch does on PostgreSQL
                    claimed, fired = await _fire_batch_statement(
                        session, now, policies.policy_set, 1000, 60.0
                    )
                    by_statement.append(claimed)
                more, more_fired = await _fire_batch_rows(
                    session, now, policies.policy_set, 1000 - claimed, 60.0
                )
                claimed, fired = claimed + more, fired + more_fired
                cycles = [
                    (c.id, c.state, c.breached_at, c.at_risk, c.announced_outcome, c.fired,
                     c.details, c.next_fire_at, c.updated_at)
                    for c in await session.scalars(select(Cycle).order_by(Cycle.id))
                ]  # fmt: skip
                messages = [
                    (m.key, m.cycle_id, m.type, m.channel, m.channel_type, m.recipient,
                     json.dumps(m.payload, sort_keys=True), m.status, m.attempts,
                     m.next_attempt_at)
                    for m in await session.scalars(
                        select(OutboxMessage)
                        .where(OutboxMessage.created_at == now)
                        .order_by(OutboxMessage.id)
                    )
                ]  # fmt: skip
                await session.rollback()
            return claimed, fired, cycles, messages

        expected = await outcome(batch_statements=False)
        got = await outcome(batch_statements=True)
        assert got[:3] == expected[:3]  # claimed, fired, every cycle column
        assert sorted(got[3]) == sorted(expected[3])  # every notification
        # each cycle's notifications in firing order (cycles due at the same instant may
        # interleave differently)
        assert _keys_by_cycle(got[3]) == _keys_by_cycle(expected[3])
        claimed, fired, _, messages = expected
        # the batch statement did the work, except for the cycles it leaves to Python
        assert tie_cycles > 0 and by_statement[0] == claimed - tie_cycles
        # the scenario reaches what it is meant to: every kind of step, several recipients,
        # rounds, reminders superseded by the breach
        assert claimed > 20 and fired > claimed
        kinds = {m[2] for m in messages}
        assert kinds == {"sla.reminder", "sla.breached", "sla.escalated"}
        assert any(".r2-" in m[0] for m in messages)
        assert {m[5] for m in messages} >= {"rep-1", "mgr-1", None}
        assert {m[6].count('"late": true') for m in messages} == {0, 1}
        bodies = "".join(m[6] for m in messages)
        assert '"elapsed_business_seconds": 308.729' in bodies  # 71.3% of 433 s
        assert '"remaining_business_seconds": 124.271' in bodies
        assert '"elapsed_business_seconds": 0.234' in bodies  # not 0.235
    finally:
        await engine.dispose()


@pytest.mark.skipif(not PG_URL, reason="a PostgreSQL setting")
async def test_only_the_sweeps_own_commits_skip_waiting_for_the_disk(database_url: str) -> None:
    """A sweep batch may commit without waiting for the disk (see ``sweep._BATCH_SETTINGS``);
    nothing else on its pooled connection may, since a 202 promises the events are stored."""
    engine = create_engine(database_url, pool_size=1)
    sessions = session_factory(engine)
    try:
        async with sessions() as session, session.begin():
            await fire_due_batch(session, datetime.now(UTC), PolicyStore(None, {}).current,
                                 10, 60.0)  # fmt: skip
            assert await session.scalar(text("SHOW synchronous_commit")) == "off"
        async with sessions() as session, session.begin():  # the same, only connection
            assert await session.scalar(text("SHOW synchronous_commit")) == "on"
    finally:
        await engine.dispose()


def _keys_by_cycle(messages: list[tuple[Any, ...]]) -> dict[int, list[str]]:
    keys: dict[int, list[str]] = defaultdict(list)
    for key, cycle_id, *_ in messages:
        keys[cycle_id].append(key)
    return keys


@pytest.mark.skipif(not PG_URL, reason="PostgreSQL's rendering of an instant")
@pytest.mark.parametrize(
    "instant",
    [
        datetime(2026, 11, 23, 12, 0, tzinfo=UTC),
        datetime(2026, 11, 23, 12, 0, 5, 120, tzinfo=UTC),
        datetime(2026, 3, 8, 23, 59, 59, 999_999, tzinfo=UTC),
        None,
    ],
)
async def test_instants_in_bodies_read_as_rfc3339_does(
    database_url: str, instant: datetime | None
) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            rendered = await connection.scalar(
                text(
                    f"SELECT {pg_rfc3339('t.at')} FROM (SELECT CAST(:at AS timestamptz) AS at) AS t"
                ).bindparams(at=instant),
            )
    finally:
        await engine.dispose()
    assert rendered == rfc3339(instant)
