"""Keeping ``status_entries`` in step with the event log, writing only what changed.

The table holds exactly the entries of each lead's stored history, and every change to a
history comes through ingest, which locks the lead first. So the entries to write follow from
the history before and after a delivery, without reading the table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, insert
from sqlalchemy.ext.asyncio import AsyncSession

from service.models import StatusEntryRow
from service.sla.types import LeadEvent
from service.sla.volume import StatusEntry, status_entries

_TABLE = cast(Table, StatusEntryRow.__table__)
_DELETE = delete(_TABLE).where(
    (_TABLE.c.lead_id == bindparam("lead_pk")) & (_TABLE.c.event_id == bindparam("entry_event_id"))
)


async def sync_status_entries(
    session: AsyncSession,
    histories: Mapping[int, tuple[Sequence[LeadEvent], Sequence[LeadEvent]]],
) -> None:
    """``histories``: per lead, its ordered history before and after the change."""
    stale: list[dict[str, Any]] = []
    added: list[dict[str, Any]] = []
    for lead_pk, (before, after) in histories.items():
        had = _by_event(before)
        wanted = _by_event(after)
        for event_id, entry in had.items():
            if wanted.get(event_id) != entry:
                stale.append({"lead_pk": lead_pk, "entry_event_id": event_id})
        for event_id, entry in wanted.items():
            if had.get(event_id) != entry:
                added.append(
                    {
                        "lead_id": lead_pk,
                        "event_id": event_id,
                        "status": entry.status,
                        "entered_at": entry.at,
                        "owner": entry.owner,
                        "team": entry.team,
                    }
                )
    if stale:  # a changed entry is replaced: (lead, event) is unique
        await session.execute(_DELETE, stale)
    if added:
        await session.execute(insert(_TABLE), added)


def _by_event(history: Sequence[LeadEvent]) -> dict[str, StatusEntry]:
    return {entry.event_id: entry for entry in status_entries(list(history))}
