"""``/api/v1/leads``: leads with their derived state, timeline and SLA cycles."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query
from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.api.deps import get_read_session, get_runtime, require
from service.api.pagination import cursor_value, decode_cursor, encode_cursor
from service.api.schemas import CycleOut, EventOut, LeadDetail, LeadOut, LeadPage
from service.models import Cycle, Lead, LeadEventRow
from service.runtime import Runtime

router = APIRouter(tags=["leads"], dependencies=[Depends(require("read"))])
Session = Annotated[AsyncSession, Depends(get_read_session)]


@router.get("/leads", response_model=LeadPage)
async def list_leads(
    session: Session,
    status: str | None = None,
    owner: str | None = None,
    team: str | None = None,
    source: Annotated[str | None, Query(description="the CRM, e.g. hubspot")] = None,
    lead_source: Annotated[str | None, Query(description="marketing source")] = None,
    breached: Annotated[bool | None, Query(description="has a breached cycle")] = None,
    at_risk: Annotated[bool | None, Query(description="has an open cycle past a reminder")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: str | None = None,
) -> LeadPage:
    query = select(Lead).order_by(Lead.id).limit(limit + 1)
    for column, value in (
        (Lead.status, status), (Lead.owner, owner), (Lead.team, team), (Lead.source, source),
        (Lead.lead_source, lead_source),
    ):  # fmt: skip
        if value is not None:
            query = query.where(column == value)
    if breached is not None:
        has_breach = exists().where(Cycle.lead_id == Lead.id, Cycle.state == "breached")
        query = query.where(has_breach if breached else ~has_breach)
    if at_risk is not None:
        risky = exists().where(
            Cycle.lead_id == Lead.id, Cycle.open.is_(True), Cycle.at_risk.is_(True),
            Cycle.state.in_(("running", "paused")),
        )  # fmt: skip
        query = query.where(risky if at_risk else ~risky)
    position = decode_cursor(cursor)
    if position is not None:
        query = query.where(Lead.id > cursor_value(position, "id", int))
    rows = list((await session.scalars(query)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return LeadPage(
        items=[LeadOut.of(lead) for lead in rows],
        next_cursor=encode_cursor({"id": rows[-1].id}) if more else None,
    )


async def find_lead(session: AsyncSession, source: str, external_id: str) -> Lead:
    lead = await session.scalar(
        select(Lead).where(Lead.source == source, Lead.external_id == external_id)
    )
    if lead is None:
        raise HTTPException(404, f"no lead {external_id!r} from {source!r}")
    return lead


@router.get("/leads/{source}/{lead_id}", response_model=LeadDetail)
async def get_lead(
    source: str,
    lead_id: str,
    session: Session,
    runtime: Annotated[Runtime, Depends(get_runtime)],
) -> LeadDetail:
    lead = await find_lead(session, source, lead_id)
    now, calendars = runtime.clock.now(), runtime.policies.current.calendars
    events = await session.scalars(
        select(LeadEventRow)
        .where(LeadEventRow.lead_id == lead.id)
        .order_by(LeadEventRow.occurred_at, LeadEventRow.event_id)
    )
    cycles = await session.scalars(
        select(Cycle).where(Cycle.lead_id == lead.id).order_by(Cycle.policy_id, Cycle.number)
    )
    return LeadDetail(
        lead=LeadOut.of(lead),
        timeline=[EventOut.of(row) for row in events],
        cycles=[CycleOut.of(cycle, now, calendars) for cycle in cycles],
    )
