"""Database-derived gauges, refreshed by the scheduler into a snapshot that ``/metrics`` serves:
a scrape never runs a query, so a slow database cannot make scrapes time out."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import metrics
from service.models import Cycle, OutboxMessage


async def refresh_gauges(sessions: async_sessionmaker[AsyncSession], now: datetime) -> None:
    async with sessions() as session:
        open_cycles = await session.execute(
            select(Cycle.policy_id, Cycle.state, Cycle.at_risk, func.count())
            .where(Cycle.open.is_(True))
            .group_by(Cycle.policy_id, Cycle.state, Cycle.at_risk)
        )
        oldest = await session.scalar(
            select(func.min(Cycle.next_fire_at)).where(Cycle.next_fire_at <= now)
        )
        outbox = await session.execute(
            select(OutboxMessage.channel_type, OutboxMessage.status, func.count())
            .where(OutboxMessage.status.in_(("pending", "delivering", "dead")))
            .group_by(OutboxMessage.channel_type, OutboxMessage.status)
        )
        open_rows = open_cycles.all()
        outbox_rows = outbox.all()
    by_state: dict[tuple[str, str], int] = {}
    at_risk: dict[str, int] = {}
    for policy_id, state, risky, count in open_rows:
        policy = metrics.LABELS.policy(policy_id)
        by_state[(policy, state)] = by_state.get((policy, state), 0) + count
        if risky and state in ("running", "paused"):
            at_risk[policy] = at_risk.get(policy, 0) + count
    metrics.OPEN_CYCLES.clear()
    for (policy, state), count in by_state.items():
        metrics.OPEN_CYCLES.labels(policy, state).set(count)
    metrics.AT_RISK_CYCLES.clear()
    for policy in metrics.LABELS.policies:
        metrics.AT_RISK_CYCLES.labels(policy).set(at_risk.get(policy, 0))
    metrics.OLDEST_OVERDUE.set((now - oldest).total_seconds() if oldest else 0.0)
    pending: dict[str, int] = {}
    dead: dict[str, int] = {}
    for channel_type, status, count in outbox_rows:
        target = dead if status == "dead" else pending
        target[channel_type] = target.get(channel_type, 0) + count
    metrics.OUTBOX_PENDING.clear()
    metrics.OUTBOX_DEAD.clear()
    for channel_type in {*pending, *dead, "webhook", "log"}:
        metrics.OUTBOX_PENDING.labels(channel_type).set(pending.get(channel_type, 0))
        metrics.OUTBOX_DEAD.labels(channel_type).set(dead.get(channel_type, 0))
