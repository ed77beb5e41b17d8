"""``GET /api/v1/leads/{source}/{id}/slas/{policy}/explain``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from sqlalchemy.ext.asyncio import AsyncSession

from service.api.deps import get_read_session, get_runtime, require
from service.explaining import NotFound, explain_stored_cycle, explanation_json
from service.runtime import Runtime

router = APIRouter(tags=["leads"], dependencies=[Depends(require("read"))])


@router.get("/leads/{source}/{lead_id}/slas/{policy}/explain")
async def explain_cycle(
    source: str,
    lead_id: str,
    policy: str,
    session: Annotated[AsyncSession, Depends(get_read_session)],
    runtime: Annotated[Runtime, Depends(get_runtime)],
    cycle: Annotated[
        int | None, Query(ge=1, description="cycle number; default the latest")
    ] = None,
) -> dict[str, Any]:
    """Every interval from the cycle's start to its stop (or now), counted or excluded, and why.
    The counted seconds add up to ``elapsed_business_seconds``."""
    try:
        explanation = await explain_stored_cycle(
            session, runtime.policies.current, source, lead_id, policy, cycle, runtime.clock.now()
        )
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    return explanation_json(explanation)
