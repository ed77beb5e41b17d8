"""``/api/v1/slas``: SLA cycles across leads — the work queue, soonest deadline first."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime
from sqlalchemy import Row, Select, select, tuple_
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
    query = select(Cycle, Lead).join(Lead, Lead.id == Cycle.lead_id)
    for column, value in ((Cycle.policy_id, policy), (Cycle.state, state), (Cycle.owner, owner),
                          (Cycle.team, team)):  # fmt: skip
        if value is not None:
            query = query.where(column == value)
    if open is not None:
        query = query.where(Cycle.open.is_(open))
    if due_before is not None:
        query = query.where(Cycle.due_at < due_before)
    rows = await _queue_page(session, query, limit + 1, decode_cursor(cursor))
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


async def _queue_page(
    session: AsyncSession, query: Select[Cycle, Lead], size: int, position: dict[str, Any] | None
) -> list[Row[Cycle, Lead]]:
    """Up to ``size`` rows of the queue after ``position``: cycles with a deadline by deadline
    and id, then those without one (in an open pause) by id.

    Two walks of the ``(due_at, id)`` index rather than one query ordered with the undated last:
    the cursor is then a range of the index, so a page costs the same however deep it is, on
    PostgreSQL and SQLite alike.
    """
    dated = query.where(Cycle.due_at.is_not(None)).order_by(Cycle.due_at, Cycle.id)
    undated = query.where(Cycle.due_at.is_(None)).order_by(Cycle.id)
    if position is not None:
        last_id = cursor_value(position, "id", int)
        if position.get("due") is None:
            undated = undated.where(Cycle.id > last_id)
            return list((await session.execute(undated.limit(size))).all())
        due = cursor_value(position, "due", aware_datetime)
        dated = dated.where(tuple_(Cycle.due_at, Cycle.id) > tuple_(due, last_id))
    rows: list[Row[Cycle, Lead]] = list((await session.execute(dated.limit(size))).all())
    if len(rows) < size:
        rows += (await session.execute(undated.limit(size - len(rows)))).all()
    return rows
