"""The timer sweep: claim cycles whose ``next_fire_at`` has come, fire their due steps into the
outbox and advance ``next_fire_at`` — all in one transaction.

Claiming uses ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so any number of workers share the work
without waiting on each other; on SQLite a single worker runs (see ``worker_lock``) inside
``BEGIN IMMEDIATE``. Steps already in ``fired`` are never fired again, and outbox keys are unique
per (cycle, step, recipient): a crash between claim and commit rolls everything back, and the
next sweep fires those steps exactly once — marked ``late`` if they are overdue.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
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


async def fire_due_batch(
    session: AsyncSession,
    now: datetime,
    policies: LoadedPolicies,
    batch_size: int,
    late_after_seconds: float,
) -> tuple[int, int]:
    query = (
        select(Cycle, Lead)
        .join(Lead, Lead.id == Cycle.lead_id)
        .where(Cycle.next_fire_at <= now)
        .order_by(Cycle.next_fire_at)
        .limit(batch_size)
    )
    if is_postgresql(session):
        query = query.with_for_update(skip_locked=True, of=Cycle)
    rows = (await session.execute(query)).all()
    outbox: list[dict[str, Any]] = []
    fired_count = 0
    for cycle, lead in rows:
        fired_count += _fire_cycle(cycle, lead, now, policies, late_after_seconds, outbox)
    await enqueue(session, outbox)
    return len(rows), fired_count


def _fire_cycle(
    cycle: Cycle,
    lead: Lead,
    now: datetime,
    policies: LoadedPolicies,
    late_after_seconds: float,
    outbox: list[dict[str, Any]],
) -> int:
    fired = list(cycle.fired)
    pending_times: list[datetime] = []
    count = 0
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
        count += 1
        lag = (now - at).total_seconds()
        metrics.TIMER_FIRE_LAG.observe(lag)
        if kind == "reminder" and cycle.due_at is not None and now >= cycle.due_at:
            continue  # the deadline passed while we were down: the breach notice supersedes it
        if kind == "breach":
            _mark_breached(cycle, at, policy_label)
        else:
            cycle.at_risk = kind == "reminder"
            metrics.REMINDERS.labels(policy_label, kind).inc()
        outbox.extend(
            messages_for(
                policies.policy_set, kind, step_key(step, round_), cycle, lead, at,
                float(entry["offset"]),
                lag > late_after_seconds, now,
            )
        )  # fmt: skip
    cycle.fired = fired
    cycle.next_fire_at = min(pending_times, default=None)
    cycle.updated_at = now
    return count


def _mark_breached(cycle: Cycle, at: datetime, policy_label: str) -> None:
    cycle.state = "breached"
    cycle.breached_at = at
    cycle.announced_outcome = "breached"
    if not cycle.details.get("outcome_counted"):
        cycle.details = {**cycle.details, "outcome_counted": "breached"}
        metrics.CYCLES_BREACHED.labels(policy_label, metrics.LABELS.team(cycle.team)).inc()
