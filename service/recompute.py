"""Moving open cycles onto the loaded policy version (``lead-sla policies recompute`` and the
admin endpoint). Closed cycles keep their outcome; open ones are re-derived under the new
targets, reminders and calendars."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.ingest import rederive_leads
from service.models import Cycle
from service.policies import LoadedPolicies
from service.repository import chunks


@dataclass(frozen=True, slots=True)
class RecomputeResult:
    leads: int
    cycles_changed: int
    version: str


async def recompute_open_cycles(
    sessions: async_sessionmaker[AsyncSession], loaded: LoadedPolicies, now: datetime
) -> RecomputeResult:
    async with sessions() as session:
        lead_pks = list(
            await session.scalars(select(Cycle.lead_id).where(Cycle.open.is_(True)).distinct())
        )
    changed = 0
    for part in chunks(sorted(lead_pks)):  # one transaction per chunk keeps locks short
        async with sessions() as session, session.begin():
            changed += await rederive_leads(session, part, now, loaded, recompute=True)
    return RecomputeResult(len(lead_pks), changed, loaded.version)
