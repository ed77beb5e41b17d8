"""Removing what is kept only for a while: raw requests after ``LEAD_SLA_RAW_RETENTION_DAYS``,
delivered notifications after ``LEAD_SLA_OUTBOX_RETENTION_DAYS``.

Rows go in batches of a bounded size, each in its own transaction, so the first purge of a
large backlog neither holds one long transaction nor locks out ingest. Events keep the id of
the request that delivered them: the purge never rewrites the event log.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.models import OutboxMessage, RawRequest


async def purge_expired(
    sessions: async_sessionmaker[AsyncSession],
    now: datetime,
    raw_retention_days: int,
    outbox_retention_days: int,
    batch_size: int = 5000,
) -> dict[str, int]:
    """Delete raw requests and delivered notifications past their retention; returns how many
    rows of each table went."""
    raw_cutoff = now - timedelta(days=raw_retention_days)
    delivered_cutoff = now - timedelta(days=outbox_retention_days)
    return {
        "raw_requests": await _delete_in_batches(
            sessions, RawRequest, RawRequest.received_at < raw_cutoff, batch_size
        ),
        "outbox": await _delete_in_batches(
            sessions,
            OutboxMessage,
            (OutboxMessage.status == "delivered") & (OutboxMessage.delivered_at < delivered_cutoff),
            batch_size,
        ),
    }


async def _delete_in_batches(
    sessions: async_sessionmaker[AsyncSession],
    model: Any,
    expired: ColumnElement[bool],
    batch_size: int,
) -> int:
    batch = select(model.id).where(expired).order_by(model.id).limit(batch_size)
    statement = delete(model).where(model.id.in_(batch.scalar_subquery()))
    total = 0
    while True:
        async with sessions() as session, session.begin():
            result = cast(CursorResult[Any], await session.execute(statement))
            deleted = result.rowcount
        total += deleted
        if deleted < batch_size:
            return total
