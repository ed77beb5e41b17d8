"""SLA cycles as ingest reads and writes them: plain rows, locked a delivery at a time and saved
in a few set-based statements instead of one per row.

Rows are compared with what was read to decide what to write, so values are replaced, never
changed in place (``row.fired = [*row.fired, step]``, not ``row.fired.append(step)``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.bulk import Write, keyed_select
from service.models import Cycle, UTCDateTime
from service.repository import chunks, is_postgresql
from service.sla.engine import Pause

CYCLES = cast(Table, Cycle.__table__)


@dataclass(slots=True, kw_only=True, eq=False)
class CycleRow:
    """One row of ``sla_cycles`` (see ``models.Cycle`` for what each column means)."""

    id: int = 0  # 0 until stored (ids start at 1)
    lead_id: int
    policy_id: str
    number: int
    policy_version: str
    kind: str
    state: str = "running"
    open: bool = True
    owner: str | None = None
    team: str | None = None
    started_at: datetime
    due_at: datetime | None = None
    stopped_at: datetime | None = None
    breached_at: datetime | None = None
    target_seconds: int | None = None
    elapsed_business_seconds: float | None = None
    attempts: int | None = None
    schedule: list[Any] = field(default_factory=list)
    fired: list[Any] = field(default_factory=list)
    next_fire_at: datetime | None = None
    details: dict[str, Any] = field(default_factory=dict)
    at_risk: bool = False
    announced_outcome: str | None = None
    updated_at: datetime | None = None
    read: tuple[Any, ...] | None = field(default=None, repr=False)  # the values as loaded
    deleted: bool = field(default=False, repr=False)

    def columns(self) -> dict[str, Any]:
        return dict(zip(COLUMNS, _column_values(self), strict=True))

    @property
    def changed(self) -> bool:
        return self.read is not None and self.read != _column_values(self)


COLUMNS = tuple(f.name for f in fields(CycleRow) if f.name not in ("read", "deleted"))
_column_values = attrgetter(*COLUMNS)  # one C call: rows are compared and written in bulk
assert set(COLUMNS) == set(CYCLES.c.keys()), "CycleRow must mirror sla_cycles"
_INSTANTS = tuple(c.name for c in CYCLES.c if isinstance(c.type, UTCDateTime))


def loaded_cycle(values: Mapping[str, Any]) -> CycleRow:
    """A stored cycle as read, remembering its values to tell later what changed."""
    row = CycleRow(**values)
    row.read = _column_values(row)
    return row


def cycle_from_json(values: dict[str, Any]) -> CycleRow:
    """A stored cycle from PostgreSQL's ``row_to_json``: instants come as ISO 8601 text."""
    for name in _INSTANTS:
        if values[name] is not None:
            values[name] = datetime.fromisoformat(values[name]).astimezone(UTC)
    return loaded_cycle(values)


def pause_json(pause: Pause) -> dict[str, Any]:
    """A pause as a cycle's ``details`` keep it."""
    return {
        "start": pause.start.isoformat(),
        "end": pause.end.isoformat() if pause.end else None,
        "event_id": pause.event_id,
        "status": pause.status,
    }


def pause_from_json(values: Mapping[str, Any]) -> Pause:
    end = values["end"]
    return Pause(
        datetime.fromisoformat(values["start"]),
        datetime.fromisoformat(end) if end else None,
        values["event_id"],
        values["status"],
    )


_NUMBER = COLUMNS.index("number")
_OF_LEADS = select(CYCLES).where(CYCLES.c.lead_id.in_(bindparam("keys", expanding=True)))


CyclesByLead = dict[int, dict[tuple[str, int], CycleRow]]  # lead -> (policy, number) -> row


async def lock_cycles(session: AsyncSession, lead_pks: Sequence[int]) -> CyclesByLead:
    """The leads' cycles by (policy, number), locked on PostgreSQL (after their leads), so that
    a breach the sweep is announcing right now is seen, and corrected if need be, rather than
    overwritten."""
    found: CyclesByLead = defaultdict(dict)
    query = keyed_select(CYCLES, "lead_id", lock=True) if is_postgresql(session) else _OF_LEADS
    for part in chunks(sorted(lead_pks)):
        for values in (await session.execute(query, {"keys": list(part)})).mappings():
            row = loaded_cycle(dict(values))
            found[row.lead_id][(row.policy_id, row.number)] = row
    return found


async def free_cycle_keys(session: AsyncSession, rows: Sequence[CycleRow]) -> None:
    """Delete the cycles a late event undid and move renumbered ones out of the way, before
    ``cycle_writes``: ``(lead, policy, number)`` is unique, and a new or updated row may take a
    number freed here."""
    deleted = [row.id for row in rows if row.deleted and row.id]
    for part in chunks(deleted):
        await session.execute(delete(CYCLES).where(CYCLES.c.id.in_(part)))
    moved = [
        row.id
        for row in rows
        if row.id and not row.deleted and row.read and row.read[_NUMBER] != row.number
    ]
    if moved:
        await session.execute(
            update(CYCLES).where(CYCLES.c.id.in_(moved)).values(number=-CYCLES.c.id)
        )


def cycle_writes(rows: Sequence[CycleRow]) -> list[Write]:
    """The changed cycles' updates and the new ones' inserts."""
    updates = [row.columns() for row in rows if row.id and not row.deleted and row.changed]
    inserts = [row.columns() for row in rows if not row.id]
    for values in inserts:
        del values["id"]  # assigned by the database
    return [Write("update", CYCLES, updates), Write("insert", CYCLES, inserts)]
