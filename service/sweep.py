"""The timer sweep: claim cycles whose ``next_fire_at`` has come, fire their due steps into the
outbox and advance ``next_fire_at`` — all in one transaction per batch.

Claiming uses ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so any number of workers — and several
transactions of one worker (``concurrency``) — share the work without waiting on each other; on
SQLite a single worker runs (see ``worker_lock``) one transaction at a time inside
``BEGIN IMMEDIATE``. Steps already in ``fired`` are never fired again, and outbox keys are unique
per (cycle, step, recipient): a crash between claim and commit rolls everything back, and the
next sweep fires those steps exactly once — marked ``late`` if they are overdue.

What fires, and what it does to the cycle, is decided in Python (``_fire_cycle``) for both
databases. On PostgreSQL a batch then costs two statements whatever its size: the claim, and one
statement that updates the cycles and writes their notifications, whose bodies PostgreSQL builds
from the cycle and lead rows (``outbox.pg_cycle_payload``). Per timer, Python only reads a few
columns and passes a few values back, which is what lets a burst of due timers (a CRM import,
the end of an outage) drain at tens of thousands a second.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, bindparam, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import metrics
from service.clock import rfc3339
from service.models import Cycle, Lead
from service.outbox import (
    MESSAGE_TYPE,
    addressees,
    business_seconds,
    enqueue,
    message_key,
    messages_for,
    pg_cycle_payload,
    resolve_recipient,
    step_key,
)
from service.policies import LoadedPolicies
from service.repository import is_postgresql
from service.sla.policy import PolicySet


async def sweep(
    sessions: async_sessionmaker[AsyncSession],
    now: datetime,
    policies: LoadedPolicies,
    batch_size: int = 1000,
    late_after_seconds: float = 60.0,
    concurrency: int = 1,
) -> int:
    """Fire everything due at ``now``, batch by batch; returns how many steps fired.

    On PostgreSQL ``concurrency`` transactions drain the due cycles side by side: while one
    waits for the database, another prepares its batch, so the process and the database work at
    once. SQLite always runs one.
    """

    async def drain() -> int:
        total = 0
        while True:
            async with sessions() as session, session.begin():
                claimed, fired = await fire_due_batch(
                    session, now, policies, batch_size, late_after_seconds
                )
            total += fired
            if claimed < batch_size:
                return total

    if concurrency <= 1 or not await _on_postgresql(sessions):
        return await drain()
    async with asyncio.TaskGroup() as group:
        drains = [group.create_task(drain()) for _ in range(concurrency)]
    return sum(task.result() for task in drains)


async def _on_postgresql(sessions: async_sessionmaker[AsyncSession]) -> bool:
    async with sessions() as session:  # no connection is taken for this
        return is_postgresql(session)


async def fire_due_batch(
    session: AsyncSession,
    now: datetime,
    policies: LoadedPolicies,
    batch_size: int,
    late_after_seconds: float,
) -> tuple[int, int]:
    """Claim up to ``batch_size`` due cycles and fire them in the session's transaction; returns
    (cycles claimed, steps fired)."""
    if is_postgresql(session):
        return await _fire_batch_postgresql(
            session, now, policies.policy_set, batch_size, late_after_seconds
        )
    return await _fire_batch_portable(
        session, now, policies.policy_set, batch_size, late_after_seconds
    )


# --- what fires: one decision for both databases ------------------------------------------


@dataclass(slots=True)
class _DueCycle:
    """A claimed cycle: the columns the sweep reads and writes, without ORM bookkeeping, which
    would cost more than the firing itself at tens of thousands of timers a second."""

    id: int
    policy_id: str
    number: int
    owner: str | None
    team: str | None
    state: str
    started_at: datetime
    due_at: datetime | None
    target_seconds: int | None
    attempts: int | None
    breached_at: datetime | None
    at_risk: bool
    announced_outcome: str | None
    schedule: list[Any]
    fired: list[Any]
    round: int  # details["round"]: which round of notices this cycle is in (outbox.step_key)
    outcome_counted: bool  # details["outcome_counted"]: its met/breached metric counted
    count_outcome: bool = False  # firing counted its breach: details get "outcome_counted"
    next_fire_at: datetime | None = None


class _Notice(NamedTuple):
    """A step that fired and is announced: one notification per recipient."""

    cycle: _DueCycle
    kind: str  # reminder | breach | escalation
    step: str  # the step's name in outbox keys (round included)
    at: datetime  # when it was due
    elapsed: float  # business seconds into the cycle at which it was due
    late: bool
    state: str  # the cycle's state once the step fired


@dataclass(slots=True)
class _Tally:
    """Metric increments of one batch, applied once per label set."""

    fired: int = 0
    breached: Counter[tuple[str, str]] = field(default_factory=Counter)
    reminders: Counter[tuple[str, str]] = field(default_factory=Counter)
    lags: list[float] = field(default_factory=list)

    def publish(self) -> None:
        for (policy, team), count in self.breached.items():
            metrics.CYCLES_BREACHED.labels(policy, team).inc(count)
        for (policy, kind), count in self.reminders.items():
            metrics.REMINDERS.labels(policy, kind).inc(count)
        observe = metrics.TIMER_FIRE_LAG.observe
        for lag in self.lags:
            observe(lag)


def _fire_cycle(
    cycle: _DueCycle,
    now: datetime,
    late_after_seconds: float,
    notices: list[_Notice],
    tally: _Tally,
) -> None:
    """Fire the cycle's due steps: updates the cycle (``fired``, state, ``next_fire_at``) and
    appends what is to be announced to ``notices``."""
    fired = list(cycle.fired)
    pending_times: list[datetime] = []
    policy_label = metrics.LABELS.policy(cycle.policy_id)
    for entry in cycle.schedule:
        step, kind = entry["step"], entry["kind"]
        if step in fired:
            continue
        at = datetime.fromisoformat(entry["at"])
        if at > now:
            pending_times.append(at)
            continue
        fired.append(step)
        tally.fired += 1
        lag = (now - at).total_seconds()
        tally.lags.append(lag)
        if kind == "reminder" and cycle.due_at is not None and now >= cycle.due_at:
            continue  # the deadline passed while we were down: the breach notice supersedes it
        if kind == "breach":
            _mark_breached(cycle, at, policy_label, tally)
        else:
            cycle.at_risk = kind == "reminder"
            tally.reminders[(policy_label, kind)] += 1
        notices.append(
            _Notice(
                cycle, kind, step_key(step, cycle.round), at, float(entry["offset"]),
                lag > late_after_seconds, cycle.state,
            )
        )  # fmt: skip
    cycle.fired = fired
    cycle.next_fire_at = min(pending_times, default=None)


def _mark_breached(cycle: _DueCycle, at: datetime, policy_label: str, tally: _Tally) -> None:
    cycle.state = "breached"
    cycle.breached_at = at
    cycle.announced_outcome = "breached"
    if not cycle.outcome_counted:
        cycle.outcome_counted = cycle.count_outcome = True
        tally.breached[(policy_label, metrics.LABELS.team(cycle.team))] += 1


# --- PostgreSQL: two statements per batch --------------------------------------------------

_PG_CLAIM = text("""
SELECT c.id, c.policy_id, c.number, c.owner, c.team, c.state, c.started_at, c.due_at,
       c.target_seconds, c.attempts, c.breached_at, c.at_risk, c.announced_outcome,
       CAST(c.schedule AS text), CAST(c.fired AS text),
       coalesce(CAST(c.details ->> 'round' AS integer), 0),
       coalesce(c.details ->> 'outcome_counted', '') <> ''
FROM sla_cycles AS c
WHERE c.next_fire_at <= :now
ORDER BY c.next_fire_at
LIMIT :batch_size
FOR UPDATE SKIP LOCKED
""")


def _pg_count_outcome(details: str) -> str:
    """``details`` with ``"outcome_counted": "breached"`` added. The stored text of an object is
    extended in place (keys keep their order, and no JSON is parsed); anything else — an empty
    object, a key already there — goes through jsonb."""
    stored = f"rtrim(CAST({details} AS text))"
    return f"""CASE
            WHEN {stored} LIKE '{{%"%}}' AND {stored} NOT LIKE '%"outcome_counted"%'
            THEN CAST(left({stored}, -1) || ', "outcome_counted": "breached"}}' AS json)
            ELSE CAST(CAST({details} AS jsonb) || '{{"outcome_counted": "breached"}}' AS json)
        END"""


# The cycles' new values and their notifications in one statement. The UPDATE's RETURNING hands
# the cycle columns a body needs to the INSERT; bodies are built here rather than in Python.
# WITH ORDINALITY keeps the notifications in firing order (outbox ids, and so delivery order).
_PG_FIRE = text(f"""
WITH fired AS (
    UPDATE sla_cycles AS c
    SET state = f.state, breached_at = f.breached_at, at_risk = f.at_risk,
        announced_outcome = f.announced_outcome, fired = CAST(f.fired AS json),
        details = CASE WHEN NOT f.count_outcome THEN c.details
                       ELSE {_pg_count_outcome("c.details")} END,
        next_fire_at = f.next_fire_at, updated_at = :now
    FROM unnest(
        CAST(:cycle_id AS bigint[]), CAST(:state AS varchar[]),
        CAST(:breached_at AS timestamptz[]), CAST(:at_risk AS boolean[]),
        CAST(:announced_outcome AS varchar[]), CAST(:fired AS text[]),
        CAST(:count_outcome AS boolean[]), CAST(:next_fire_at AS timestamptz[])
    ) AS f(id, state, breached_at, at_risk, announced_outcome, fired, count_outcome,
           next_fire_at)
    WHERE c.id = f.id
    RETURNING c.id, c.lead_id, c.policy_id, c.number, c.owner, c.team, c.started_at, c.due_at,
              c.attempts
)
INSERT INTO outbox (key, cycle_id, type, channel, channel_type, recipient, payload, status,
                    attempts, next_attempt_at, created_at)
SELECT m.key, m.cycle_id, m.type, m.channel, m.channel_type, m.recipient,
       {pg_cycle_payload("m", "fired")},
       'pending', 0, :now, :now
FROM unnest(
    CAST(:m_key AS varchar[]), CAST(:m_cycle_id AS bigint[]), CAST(:m_type AS varchar[]),
    CAST(:m_channel AS varchar[]), CAST(:m_channel_type AS varchar[]),
    CAST(:m_recipient AS varchar[]), CAST(:m_occurred_at AS text[]), CAST(:m_late AS boolean[]),
    CAST(:m_state AS varchar[]), CAST(:m_elapsed AS text[]), CAST(:m_remaining AS text[])
) WITH ORDINALITY AS m(key, cycle_id, type, channel, channel_type, recipient, occurred_at, late,
                       state, elapsed, remaining, ordinality)
JOIN fired ON fired.id = m.cycle_id
ORDER BY m.ordinality
ON CONFLICT (key) DO NOTHING
""")

_decode = json.JSONDecoder().decode

_CYCLE_ARRAYS = (
    "cycle_id", "state", "breached_at", "at_risk", "announced_outcome", "fired", "count_outcome",
    "next_fire_at",
)  # fmt: skip
_MESSAGE_ARRAYS = (
    "m_key", "m_cycle_id", "m_type", "m_channel", "m_channel_type", "m_recipient",
    "m_occurred_at", "m_late", "m_state", "m_elapsed", "m_remaining",
)  # fmt: skip


async def _fire_batch_postgresql(
    session: AsyncSession,
    now: datetime,
    policy_set: PolicySet,
    batch_size: int,
    late_after_seconds: float,
) -> tuple[int, int]:
    rows = (await session.execute(_PG_CLAIM, {"now": now, "batch_size": batch_size})).all()
    if not rows:
        return 0, 0
    notices: list[_Notice] = []
    tally = _Tally()
    cycles = [_pg_due_cycle(row) for row in rows]
    for cycle in cycles:
        _fire_cycle(cycle, now, late_after_seconds, notices, tally)
    params: dict[str, Any] = {"now": now}
    params.update(zip(_CYCLE_ARRAYS, _cycle_arrays(cycles), strict=True))
    params.update(zip(_MESSAGE_ARRAYS, _message_arrays(notices, policy_set), strict=True))
    await session.execute(_PG_FIRE, params)
    tally.publish()
    return len(rows), tally.fired


def _pg_due_cycle(row: Sequence[Any]) -> _DueCycle:
    (id_, policy_id, number, owner, team, state, started_at, due_at, target_seconds, attempts,
     breached_at, at_risk, announced_outcome, schedule, fired, round_,
     outcome_counted) = row  # fmt: skip
    return _DueCycle(
        id_, policy_id, number, owner, team, state, started_at, due_at, target_seconds,
        attempts, breached_at, at_risk, announced_outcome, _decode(schedule),
        [] if fired == "[]" else _decode(fired), round_, outcome_counted,
    )  # fmt: skip


def _cycle_arrays(cycles: list[_DueCycle]) -> tuple[list[Any], ...]:
    return (
        [c.id for c in cycles],
        [c.state for c in cycles],
        [c.breached_at for c in cycles],
        [c.at_risk for c in cycles],
        [c.announced_outcome for c in cycles],
        [json.dumps(c.fired) for c in cycles],
        [c.count_outcome for c in cycles],
        [c.next_fire_at for c in cycles],
    )


def _message_arrays(notices: list[_Notice], policy_set: PolicySet) -> tuple[list[Any], ...]:
    """The notifications' columns, one array each; bodies are left to the database."""
    arrays: tuple[list[Any], ...] = tuple([] for _ in _MESSAGE_ARRAYS)
    key, cycle_id, type_, channel_name, channel_type, recipient_, occurred_at = arrays[:7]
    late, state, elapsed, remaining = arrays[7:]
    recipients: dict[tuple[str, str], Any] = {}  # addressees per (policy, kind) in this batch
    for notice in notices:
        cycle = notice.cycle
        found = recipients.get((cycle.policy_id, notice.kind))
        if found is None:
            found = recipients[(cycle.policy_id, notice.kind)] = addressees(
                policy_set, cycle.policy_id, notice.kind
            )
        if not found:
            continue
        at = rfc3339(notice.at)
        elapsed_s, remaining_s = (
            repr(n) for n in business_seconds(notice.elapsed, cycle.target_seconds)
        )
        for index, channel, recipient in found:
            key.append(message_key(cycle.id, notice.step, index))
            cycle_id.append(cycle.id)
            type_.append(MESSAGE_TYPE[notice.kind])
            channel_name.append(channel.name)
            channel_type.append(channel.type)
            recipient_.append(resolve_recipient(recipient, cycle.owner, policy_set))
            occurred_at.append(at)
            late.append(notice.late)
            state.append(notice.state)
            elapsed.append(elapsed_s)
            remaining.append(remaining_s)
    return arrays


# --- SQLite (and any other database): row by row --------------------------------------------


@dataclass(frozen=True, slots=True)
class _LeadRef:
    source: str
    external_id: str
    status: str | None


_CLAIMED = (
    Cycle.id, Cycle.policy_id, Cycle.number, Cycle.owner, Cycle.team, Cycle.state,
    Cycle.started_at, Cycle.due_at, Cycle.target_seconds, Cycle.attempts, Cycle.breached_at,
    Cycle.at_risk, Cycle.announced_outcome, Cycle.schedule, Cycle.fired, Cycle.details,
)  # fmt: skip
_CYCLES = cast(Table, Cycle.__table__)
_UPDATE = (
    update(_CYCLES)
    .where(_CYCLES.c.id == bindparam("cycle_id"))
    .values(
        state=bindparam("state"),
        breached_at=bindparam("breached_at"),
        at_risk=bindparam("at_risk"),
        announced_outcome=bindparam("announced_outcome"),
        fired=bindparam("fired"),
        details=bindparam("details"),
        next_fire_at=bindparam("next_fire_at"),
        updated_at=bindparam("updated_at"),
    )
)


async def _fire_batch_portable(
    session: AsyncSession,
    now: datetime,
    policy_set: PolicySet,
    batch_size: int,
    late_after_seconds: float,
) -> tuple[int, int]:
    query = (
        select(*_CLAIMED, Lead.source, Lead.external_id, Lead.status)
        .join(Lead, Lead.id == Cycle.lead_id)
        .where(Cycle.next_fire_at <= now)
        .order_by(Cycle.next_fire_at)
        .limit(batch_size)
    )
    rows = (await session.execute(query)).all()
    notices: list[_Notice] = []
    tally = _Tally()
    leads: dict[int, _LeadRef] = {}
    updates: list[dict[str, Any]] = []
    for row in rows:
        (id_, policy_id, number, owner, team, state, started_at, due_at, target_seconds,
         attempts, breached_at, at_risk, announced_outcome, schedule, fired, details, source,
         external_id, status) = row  # fmt: skip
        details = details or {}
        cycle = _DueCycle(
            id_, policy_id, number, owner, team, state, started_at, due_at, target_seconds,
            attempts, breached_at, at_risk, announced_outcome, schedule, fired,
            int(details.get("round", 0)), bool(details.get("outcome_counted")),
        )  # fmt: skip
        leads[cycle.id] = _LeadRef(source, external_id, status)
        _fire_cycle(cycle, now, late_after_seconds, notices, tally)
        if cycle.count_outcome:
            details = {**details, "outcome_counted": "breached"}
        updates.append({
            "cycle_id": cycle.id, "state": cycle.state, "breached_at": cycle.breached_at,
            "at_risk": cycle.at_risk, "announced_outcome": cycle.announced_outcome,
            "fired": cycle.fired, "details": details, "next_fire_at": cycle.next_fire_at,
            "updated_at": now,
        })  # fmt: skip
    if updates:
        await session.execute(_UPDATE, updates)
    outbox: list[dict[str, Any]] = []
    for notice in notices:
        as_fired = replace(notice.cycle, state=notice.state)
        outbox.extend(
            messages_for(
                policy_set, notice.kind, notice.step, as_fired, leads[as_fired.id], notice.at,
                notice.elapsed, notice.late, now,
            )
        )  # fmt: skip
    await enqueue(session, outbox)
    tally.publish()
    return len(rows), tally.fired
