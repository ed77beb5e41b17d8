"""The timer sweep: claim cycles whose ``next_fire_at`` has come, fire their due steps into the
outbox and advance ``next_fire_at`` — all in one transaction.

Claiming uses ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so any number of workers share the work
without waiting on each other; on SQLite a single worker runs (see ``worker_lock``) inside
``BEGIN IMMEDIATE``. Steps already in ``fired`` are never fired again, and outbox keys are unique
per (cycle, step, recipient): a crash between claim and commit rolls everything back, and the
next sweep fires those steps exactly once — marked ``late`` if they are overdue.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import metrics
from service.models import Cycle, Lead
from service.outbox import enqueue, messages_for, step_key
from service.policies import LoadedPolicies
from service.repository import is_postgresql


async def sweep(
    sessions: async_sessionmaker[AsyncSession],
    now: datetime,
    policies: LoadedPolicies,
    batch_size: int = 1000,
    late_after_seconds: float = 60.0,
) -> int:
    """Fire everything due at ``now``, batch by batch; returns how many steps fired."""
    total = 0
    while True:
        async with sessions() as session, session.begin():
            claimed, fired = await fire_due_batch(
                session, now, policies, batch_size, late_after_seconds
            )
        total += fired
        if claimed < batch_size:
            return total


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
    details: dict[str, Any]


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


# PostgreSQL: the whole batch in one statement over arrays. Executing the UPDATE once per row
# costs more than everything else the sweep does.
_PG_UPDATE = text("""
UPDATE sla_cycles AS c
SET state = u.state, breached_at = u.breached_at, at_risk = u.at_risk,
    announced_outcome = u.announced_outcome, fired = u.fired::json, details = u.details::json,
    next_fire_at = u.next_fire_at, updated_at = u.updated_at
FROM unnest(
    CAST(:cycle_id AS bigint[]), CAST(:state AS varchar[]), CAST(:breached_at AS timestamptz[]),
    CAST(:at_risk AS boolean[]), CAST(:announced_outcome AS varchar[]), CAST(:fired AS text[]),
    CAST(:details AS text[]), CAST(:next_fire_at AS timestamptz[]),
    CAST(:updated_at AS timestamptz[])
) AS u(id, state, breached_at, at_risk, announced_outcome, fired, details, next_fire_at,
       updated_at)
WHERE c.id = u.id
""")
_JSON_COLUMNS = ("fired", "details")


def _as_arrays(updates: list[dict[str, Any]]) -> dict[str, list[Any]]:
    arrays: dict[str, list[Any]] = {name: [] for name in updates[0]}
    for row in updates:
        for name, value in row.items():
            arrays[name].append(json.dumps(value) if name in _JSON_COLUMNS else value)
    return arrays


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
        for lag in self.lags:
            metrics.TIMER_FIRE_LAG.observe(lag)


async def fire_due_batch(
    session: AsyncSession,
    now: datetime,
    policies: LoadedPolicies,
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
    if is_postgresql(session):
        query = query.with_for_update(skip_locked=True, of=Cycle)
    rows = (await session.execute(query)).all()
    outbox: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    tally = _Tally()
    width = len(_CLAIMED)
    for row in rows:
        cycle = _DueCycle(*row[:width])
        lead = _LeadRef(*row[width:])
        next_at = _fire_cycle(cycle, lead, now, policies, late_after_seconds, outbox, tally)
        updates.append({
            "cycle_id": cycle.id, "state": cycle.state, "breached_at": cycle.breached_at,
            "at_risk": cycle.at_risk, "announced_outcome": cycle.announced_outcome,
            "fired": cycle.fired, "details": cycle.details, "next_fire_at": next_at,
            "updated_at": now,
        })  # fmt: skip
    if not updates:
        pass
    elif is_postgresql(session):
        await session.execute(_PG_UPDATE, _as_arrays(updates))
    else:
        await session.execute(_UPDATE, updates)
    await enqueue(session, outbox)
    tally.publish()
    return len(rows), tally.fired


def _fire_cycle(
    cycle: _DueCycle,
    lead: _LeadRef,
    now: datetime,
    policies: LoadedPolicies,
    late_after_seconds: float,
    outbox: list[dict[str, Any]],
    tally: _Tally,
) -> datetime | None:
    """Fire the cycle's due steps; returns its next fire time."""
    fired = list(cycle.fired)
    pending_times: list[datetime] = []
    policy_label = metrics.LABELS.policy(cycle.policy_id)
    round_ = int((cycle.details or {}).get("round", 0))
    for entry in cycle.schedule:
        step, kind = entry["step"], entry["kind"]
        at = datetime.fromisoformat(entry["at"])
        if step in fired:
            continue
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
        outbox.extend(
            messages_for(
                policies.policy_set, kind, step_key(step, round_), cycle, lead, at,
                float(entry["offset"]),
                lag > late_after_seconds, now,
            )
        )  # fmt: skip
    cycle.fired = fired
    return min(pending_times, default=None)


def _mark_breached(cycle: _DueCycle, at: datetime, policy_label: str, tally: _Tally) -> None:
    cycle.state = "breached"
    cycle.breached_at = at
    cycle.announced_outcome = "breached"
    if not cycle.details.get("outcome_counted"):
        cycle.details = {**cycle.details, "outcome_counted": "breached"}
        tally.breached[(policy_label, metrics.LABELS.team(cycle.team))] += 1
