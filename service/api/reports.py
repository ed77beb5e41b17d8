"""``/api/v1/reports``: compliance by policy and group, and volume progress with pace."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from sqlalchemy.ext.asyncio import AsyncSession

from service.api.deps import get_read_session, get_runtime, require
from service.reports import GroupBy, compliance, volume_json, volume_progress
from service.runtime import Runtime

router = APIRouter(tags=["reports"], dependencies=[Depends(require("read"))])
Session = Annotated[AsyncSession, Depends(get_read_session)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        raise HTTPException(422, f"{name} needs a UTC offset, e.g. 2026-11-01T00:00:00Z")
    return value


@router.get("/reports/compliance")
async def compliance_report(
    session: Session,
    runtime: RuntimeDep,
    from_: Annotated[
        datetime | None, Query(alias="from", description="default: 30 days ago")
    ] = None,
    to: Annotated[datetime | None, Query(description="default: now")] = None,
    policy: str | None = None,
    group_by: GroupBy | None = None,
) -> dict[str, Any]:
    """Met, breached and running cycles whose deadline falls in [from, to), the compliance rate
    met / (met + breached), and p50/p90 business seconds from start to stop."""
    end = _aware(to, "to") if to else runtime.clock.now()
    start = _aware(from_, "from") if from_ else end - timedelta(days=30)
    if start >= end:
        raise HTTPException(422, "from must be before to")
    rows = await compliance(session, start, end, policy, group_by)
    return {"from": start.isoformat(), "to": end.isoformat(), "group_by": group_by, "rows": rows}


@router.get("/reports/volume")
async def volume_report(
    session: Session,
    runtime: RuntimeDep,
    at: Annotated[datetime | None, Query(description="a moment in the period; default now")] = None,
    policy: str | None = None,
) -> dict[str, Any]:
    """Each volume policy's period containing ``at``: count per owner/team against the target,
    and where the current pace leads (``on pace for 38 of 50``)."""
    moment = _aware(at, "at") if at else runtime.clock.now()
    loaded = runtime.policies.current
    reports = []
    for candidate in loaded.policy_set.policies:
        if candidate.kind != "volume" or (policy is not None and candidate.id != policy):
            continue
        start, end, rows = await volume_progress(session, loaded, candidate, moment)
        reports.append(volume_json(candidate, start, end, rows))
    if policy is not None and not reports:
        raise HTTPException(404, f"no volume policy {policy!r}")
    return {"at": moment.isoformat(), "policies": reports}
