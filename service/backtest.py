"""Running a candidate policy file over stored history, side by side with the loaded one.

Read-only: it folds every lead's events under both sets in memory and aggregates cycles whose
deadline falls in the window. Nothing is written and nothing is sent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.event_log import load_histories
from service.models import Lead
from service.policies import LoadedPolicies
from service.reports import aggregate
from service.repository import chunks
from service.sla.engine import derive_cycles

Row = tuple[str, str | None, str, bool, float | None]


async def backtest(
    sessions: async_sessionmaker[AsyncSession],
    current: LoadedPolicies,
    candidate: LoadedPolicies,
    start: datetime,
    end: datetime,
    now: datetime,
) -> dict[str, Any]:
    as_of = min(end, now)
    rows: dict[str, list[Row]] = {"current": [], "candidate": []}
    async with sessions() as session:
        lead_pks = list(await session.scalars(select(Lead.id).order_by(Lead.id)))
        for part in chunks(lead_pks):
            histories = await load_histories(session, part)
            for events in histories.values():
                for name, loaded in (("current", current), ("candidate", candidate)):
                    rows[name].extend(_cycles_in_window(loaded, events, start, end, as_of))
    return {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "leads": len(lead_pks),
        "current": {"version": current.version, "policies": aggregate(rows["current"])},
        "candidate": {"version": candidate.version, "policies": aggregate(rows["candidate"])},
    }


def _cycles_in_window(
    loaded: LoadedPolicies, events: Any, start: datetime, end: datetime, as_of: datetime
) -> list[Row]:
    found: list[Row] = []
    for policy in loaded.policy_set.policies:
        for cycle in derive_cycles(policy, events, as_of, loaded.calendars):
            if cycle.due_at is not None and start <= cycle.due_at < end:
                found.append(
                    (policy.id, None, cycle.state, cycle.open, cycle.elapsed_business_seconds)
                )
    return found
