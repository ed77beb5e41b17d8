"""Keeping ``status_entries`` in step with the event log, writing only what changed.

The table holds exactly the entries of each lead's stored history, and every change to a
history comes through ingest, which locks the lead first. So the entries to write follow from
the history before and after a delivery, without reading the table.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete
from sqlalchemy.ext.asyncio import AsyncSession

from service.bulk import Write
from service.models import StatusEntryRow
from service.sla.types import LeadEvent, LeadState
from service.sla.volume import StatusEntry, status_entries

_TABLE = cast(Table, StatusEntryRow.__table__)
_DELETE = delete(_TABLE).where(
    (_TABLE.c.lead_id == bindparam("lead_pk")) & (_TABLE.c.event_id == bindparam("entry_event_id"))
)


@dataclass(frozen=True, slots=True)
class StatusChanges:
    """A lead's ordered history (with its ``lead_states``) and the ids of the events just added
    to it."""

    history: Sequence[LeadEvent]
    states: Sequence[LeadState]
    added: Collection[str]

    def entries(self) -> tuple[dict[str, StatusEntry], dict[str, StatusEntry]]:
        """The lead's status entries before the events were added, and after."""
        after = {e.event_id: e for e in status_entries(self.history, self.states)}
        earlier = [event for event in self.history if event.event_id not in self.added]
        if all(e.event_id in self.added for e in self.history[len(earlier) :]):
            # The new events came last: entries depend only on what precedes them.
            return {k: e for k, e in after.items() if k not in self.added}, after
        return {e.event_id: e for e in status_entries(earlier)}, after


async def status_entry_writes(session: AsyncSession, leads: Mapping[int, StatusChanges]) -> Write:
    """Delete the entries the changes made stale (or changed), and return the inserts of the
    entries they added, to be written with the rest of the delivery."""
    stale: list[dict[str, Any]] = []
    added: list[dict[str, Any]] = []
    for lead_pk, changes in leads.items():
        had, wanted = changes.entries()
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
    return Write("insert", _TABLE, added)
