"""``/api/v1/outbox``: what is waiting, what is dead, and sending dead notifications again."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.api.deps import get_read_session, get_runtime, get_session, require
from service.api.pagination import decode_cursor, encode_cursor
from service.models import OutboxMessage
from service.runtime import Runtime

router = APIRouter(tags=["outbox"])
Session = Annotated[AsyncSession, Depends(get_session)]
ReadSession = Annotated[AsyncSession, Depends(get_read_session)]


class OutboxOut(BaseModel):
    id: int
    key: str
    type: str
    channel: str
    recipient: str | None
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    payload: dict[str, Any]


class OutboxPage(BaseModel):
    items: list[OutboxOut]
    next_cursor: str | None


def _out(row: OutboxMessage) -> OutboxOut:
    return OutboxOut(
        id=row.id, key=row.key, type=row.type, channel=row.channel, recipient=row.recipient,
        status=row.status, attempts=row.attempts, next_attempt_at=row.next_attempt_at,
        last_error=row.last_error, created_at=row.created_at, delivered_at=row.delivered_at,
        payload=row.payload,
    )  # fmt: skip


@router.get("/outbox", response_model=OutboxPage, dependencies=[Depends(require("read"))])
async def list_outbox(
    session: ReadSession,
    status: Literal["pending", "delivering", "delivered", "dead"] | None = None,
    channel: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: str | None = None,
) -> OutboxPage:
    query = select(OutboxMessage).order_by(OutboxMessage.id).limit(limit + 1)
    if status is not None:
        query = query.where(OutboxMessage.status == status)
    if channel is not None:
        query = query.where(OutboxMessage.channel == channel)
    position = decode_cursor(cursor)
    if position is not None:
        query = query.where(OutboxMessage.id > int(position.get("id", 0)))
    rows = list((await session.scalars(query)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return OutboxPage(
        items=[_out(r) for r in rows],
        next_cursor=encode_cursor({"id": rows[-1].id}) if more else None,
    )


@router.post("/outbox/retry", dependencies=[Depends(require("admin"))])
async def retry_dead(
    session: Session,
    runtime: Annotated[Runtime, Depends(get_runtime)],
    id: Annotated[int | None, Query(description="one message; default: every dead one")] = None,
) -> dict[str, int]:
    """Send dead notifications again from the first attempt (same idempotency key)."""
    statement = update(OutboxMessage).where(OutboxMessage.status == "dead")
    if id is not None:
        statement = statement.where(OutboxMessage.id == id)
    result = await session.execute(
        statement.values(
            status="pending", attempts=0, next_attempt_at=runtime.clock.now(), lease_until=None
        )
    )
    count = int(getattr(result, "rowcount", 0) or 0)
    if id is not None and count == 0:
        raise HTTPException(404, f"no dead notification {id}")
    return {"requeued": count}
