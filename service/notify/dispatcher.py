"""The outbox dispatcher: lease due rows, deliver them outside any transaction, record outcomes.

A lease (``status=delivering`` until ``lease_until``) keeps two workers from sending the same row
at once; if a worker dies mid-delivery the lease expires and another picks the row up — which is
why delivery is at-least-once and every message carries its idempotency key. Failures back off
exponentially with jitter (or as the receiver's ``Retry-After`` asks) until the last attempt,
after which the row is ``dead``: visible in metrics and the API, retryable by an operator.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import metrics
from service.clock import Clock
from service.failure_streaks import FailureStreak
from service.models import OutboxMessage
from service.notify.channels import Delivery, Message, deliver
from service.policies import LoadedPolicies
from service.repository import is_postgresql

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 8
    base_seconds: float = 5.0
    max_seconds: float = 3600.0
    lease_seconds: float = 60.0

    def backoff(self, attempts: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_seconds)
        ceiling = min(self.max_seconds, self.base_seconds * 2 ** (attempts - 1))
        return random.uniform(ceiling / 2, ceiling)  # jitter spreads retries of a shared outage


@dataclass(frozen=True, slots=True)
class _Claimed:
    id: int
    attempts: int
    channel: str
    channel_type: str
    message: Message


async def dispatch(
    sessions: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
    clock: Clock,
    policies: LoadedPolicies,
    retry: RetryPolicy,
    batch_size: int = 200,
    concurrency: int = 20,
    streaks: dict[str, FailureStreak] | None = None,
) -> int:
    """One dispatch round; returns how many rows were attempted.

    ``streaks``: each channel's failures in a row, kept by the caller from round to round (the
    scheduler), so that a receiver that is down is logged when its deliveries start failing,
    once a minute while they do, and when one goes through again.
    """
    async with sessions() as session, session.begin():
        claimed = await _claim(session, clock.now(), retry, batch_size)
    if not claimed:
        return 0
    gate = asyncio.Semaphore(concurrency)

    async def attempt(row: _Claimed) -> tuple[_Claimed, Delivery]:
        channel = policies.policy_set.channels.get(row.channel)
        if channel is None:
            return row, Delivery(ok=False, error=f"channel {row.channel!r} is no longer configured",
                                 permanent=True)  # fmt: skip
        async with gate:
            try:
                return row, await deliver(row.message, channel, http, clock.now())
            except Exception as exc:  # one broken message must not lose the batch's outcomes
                log.exception("delivering outbox row %s failed", row.id)
                return row, Delivery(ok=False, error=f"{type(exc).__name__}: {exc}")

    results = await asyncio.gather(*(attempt(row) for row in claimed))
    async with sessions() as session, session.begin():
        for row, outcome in results:
            await _record(session, row, outcome, clock.now(), retry)
    _log_outcomes(results, {} if streaks is None else streaks)
    return len(claimed)


def _log_outcomes(
    results: list[tuple[_Claimed, Delivery]], streaks: dict[str, FailureStreak]
) -> None:
    for row, outcome in results:
        streak = streaks.get(row.channel)
        if streak is None:
            streak = streaks[row.channel] = FailureStreak(log, f"deliveries to {row.channel}")
        if outcome.ok:
            streak.succeeded()
        else:
            streak.failed(outcome.error or "failed")


async def _claim(
    session: AsyncSession, now: datetime, retry: RetryPolicy, batch_size: int
) -> list[_Claimed]:
    due = or_(
        and_(OutboxMessage.status == "pending", OutboxMessage.next_attempt_at <= now),
        and_(OutboxMessage.status == "delivering", OutboxMessage.lease_until < now),
    )
    query = (
        select(OutboxMessage)
        .where(due)
        .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
        .limit(batch_size)
    )
    if is_postgresql(session):
        query = query.with_for_update(skip_locked=True)
    rows = (await session.scalars(query)).all()
    lease_until = now + timedelta(seconds=retry.lease_seconds)
    claimed = []
    for row in rows:
        row.status, row.lease_until, row.attempts = "delivering", lease_until, row.attempts + 1
        claimed.append(
            _Claimed(row.id, row.attempts, row.channel, row.channel_type,
                     Message(row.key, row.type, row.recipient, row.payload))
        )  # fmt: skip
    return claimed


async def _record(
    session: AsyncSession, row: _Claimed, outcome: Delivery, now: datetime, retry: RetryPolicy
) -> None:
    # Only the holder of this lease may record: if it expired and another worker re-claimed the
    # row, attempts moved on and this update matches nothing.
    mine = (
        (OutboxMessage.id == row.id)
        & (OutboxMessage.attempts == row.attempts)
        & (OutboxMessage.status == "delivering")
    )
    if outcome.ok:
        values = {"status": "delivered", "delivered_at": now, "lease_until": None,
                  "last_error": None}  # fmt: skip
        label = "delivered"
    elif outcome.permanent or row.attempts >= retry.max_attempts:
        values = {"status": "dead", "lease_until": None, "last_error": outcome.error}
        label = "dead"
    else:
        delay = retry.backoff(row.attempts, outcome.retry_after_seconds)
        values = {"status": "pending", "lease_until": None, "last_error": outcome.error,
                  "next_attempt_at": now + timedelta(seconds=delay)}  # fmt: skip
        label = "retried"
    result = await session.execute(update(OutboxMessage).where(mine).values(**values))
    if getattr(result, "rowcount", 1):
        metrics.NOTIFICATIONS.labels(row.channel_type, label).inc()
