"""``/api/v1/slas``: SLA cycles across leads — the work queue, soonest deadline first."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.api.deps import get_read_session, get_runtime, require
from service.api.pagination import aware_datetime, cursor_value, decode_cursor, encode_cursor
from service.api.schemas import CycleOut, CyclePage
from service.models import Cycle, Lead
from service.runtime import Runtime

router = APIRouter(tags=["slas"], dependencies=[Depends(require("read"))])
Session = Annotated[AsyncSession, Depends(get_read_session)]


@router.get("/slas", response_model=CyclePage)
async def list_cycles(
    session: Session,
    runtime: Annotated[Runtime, Depends(get_runtime)],
    policy: str | None = None,
    state: Literal["running", "paused", "met", "breached"] | None = None,
    open: Annotated[bool | None, Query(description="not yet stopped")] = None,
    owner: str | None = None,
    team: str | None = None,
    due_before: Annotated[
        AwareDatetime | None,
        Query(description="RFC 3339 with an offset, e.g. 2026-11-23T15:00:00Z"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: str | None = None,
) -> CyclePage:
    query = (
        select(Cycle, Lead)
        .join(Lead, Lead.id == Cycle.lead_id)
        .order_by(Cycle.due_at.is_(None), Cycle.due_at, Cycle.id)
        .limit(limit + 1)
    )
    for column, value in ((Cycle.policy_id, policy), (Cycle.state, state), (Cycle.owner, owner),
                          (Cycle.team, team)):  # fmt: skip
        if value is not None:
            query = query.where(column == value)
    if open is not None:
        query = query.where(Cycle.open.is_(open))
    if due_before is not None:
        query = query.where(Cycle.due_at < due_before)
    position = decode_cursor(cursor)
    if position is not None:
        last_id = cursor_value(position, "id", int)
        if position.get("due") is None:
            query = query.where(Cycle.due_at.is_(None), Cycle.id > last_id)
        else:
            due = cursor_value(position, "due", aware_datetime)
            query = query.where(
                or_(
                    Cycle.due_at > due,
                    and_(Cycle.due_at == due, Cycle.id > last_id),
                    Cycle.due_at.is_(None),
                )
            )
    rows = (await session.execute(query)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if more:
        last = rows[-1][0]
        due_text = last.due_at.isoformat() if last.due_at else None
        next_cursor = encode_cursor({"due": due_text, "id": last.id})
    now, calendars = runtime.clock.now(), runtime.policies.current.calendars
    items = [CycleOut.of(c, now, calendars, lead) for c, lead in rows]
    return CyclePage(items=items, next_cursor=next_cursor)
