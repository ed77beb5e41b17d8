"""Keeping ``status_entries`` in step with the event log, writing only what changed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.models import StatusEntryRow
from service.repository import chunks
from service.sla.types import LeadEvent
from service.sla.volume import StatusEntry, status_entries


async def sync_status_entries(
    session: AsyncSession, histories: Mapping[int, Sequence[LeadEvent]]
) -> None:
    stored: dict[int, dict[str, StatusEntryRow]] = {pk: {} for pk in histories}
    for part in chunks(sorted(histories)):
        rows = await session.scalars(select(StatusEntryRow).where(StatusEntryRow.lead_id.in_(part)))
        for row in rows:
            stored[row.lead_id][row.event_id] = row
    stale: list[int] = []
    for lead_pk, events in histories.items():
        wanted = {entry.event_id: entry for entry in status_entries(list(events))}
        have = stored[lead_pk]
        for event_id, row in have.items():
            entry = wanted.get(event_id)
            if entry is None:
                stale.append(row.id)
            elif _key(entry) != (row.status, row.entered_at, row.owner, row.team):
                row.status, row.entered_at, row.owner, row.team = _key(entry)
        for event_id, entry in wanted.items():
            if event_id not in have:
                session.add(
                    StatusEntryRow(
                        lead_id=lead_pk, event_id=event_id, status=entry.status,
                        entered_at=entry.at, owner=entry.owner, team=entry.team,
                    )
                )  # fmt: skip
    for part in chunks(stale):
        await session.execute(delete(StatusEntryRow).where(StatusEntryRow.id.in_(part)))


def _key(entry: StatusEntry) -> tuple[str, datetime, str | None, str | None]:
    return (entry.status, entry.at, entry.owner, entry.team)
