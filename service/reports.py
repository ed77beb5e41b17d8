"""Compliance and volume reports over stored cycles and status entries.

Compliance = met / (met + breached) over the cycles whose deadline falls in the window, so a
report for last week does not move as this week's leads arrive.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import func, null, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.models import Cycle, Lead, StatusEntryRow
from service.policies import LoadedPolicies
from service.sla.policy import Policy
from service.sla.volume import VolumeProgress, period_bounds, progress

GroupBy = Literal["owner", "team", "source", "segment", "crm"]


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile: always a value that occurred."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class ComplianceRow:
    policy: str
    group: str | None
    met: int = 0
    breached: int = 0
    running: int = 0
    times_to_stop: list[float] = field(default_factory=list)

    def add(self, state: str, is_open: bool, elapsed: float | None) -> None:
        if state == "met":
            self.met += 1
        elif state == "breached":
            self.breached += 1
        else:
            self.running += 1
        if not is_open and elapsed is not None:
            self.times_to_stop.append(elapsed)

    def as_json(self) -> dict[str, Any]:
        decided = self.met + self.breached
        return {
            "policy": self.policy,
            "group": self.group,
            "met": self.met,
            "breached": self.breached,
            "running": self.running,
            "compliance": round(self.met / decided, 4) if decided else None,
            "time_to_stop_p50_seconds": percentile(self.times_to_stop, 0.5),
            "time_to_stop_p90_seconds": percentile(self.times_to_stop, 0.9),
        }


def aggregate(
    rows: Iterable[tuple[str, str | None, str, bool, float | None]],
) -> list[dict[str, Any]]:
    """(policy, group, state, open, elapsed) tuples -> one row per policy and group."""
    table: dict[tuple[str, str | None], ComplianceRow] = {}
    for policy, group, state, is_open, elapsed in rows:
        key = (policy, group)
        if key not in table:
            table[key] = ComplianceRow(policy, group)
        table[key].add(state, is_open, elapsed)
    return [table[key].as_json() for key in sorted(table, key=lambda k: (k[0], k[1] or ""))]


def _group_column(group_by: GroupBy | None) -> Any:
    columns: dict[GroupBy | None, Any] = {
        None: None,
        "owner": Cycle.owner,
        "team": Cycle.team,
        "source": Lead.lead_source,
        "segment": Lead.segment,
        "crm": Lead.source,
    }
    return columns[group_by]


async def compliance(
    session: AsyncSession,
    start: datetime,
    end: datetime,
    policy: str | None = None,
    group_by: GroupBy | None = None,
) -> list[dict[str, Any]]:
    group = _group_column(group_by)
    query = (
        select(
            Cycle.policy_id,
            group if group is not None else null(),
            Cycle.state,
            Cycle.open,
            Cycle.elapsed_business_seconds,
        )
        .join(Lead, Lead.id == Cycle.lead_id)
        .where(Cycle.due_at >= start, Cycle.due_at < end)
    )
    if policy is not None:
        query = query.where(Cycle.policy_id == policy)
    rows = (await session.execute(query)).all()
    return aggregate((p, g, s, o, e) for p, g, s, o, e in rows)


async def volume_counts(
    session: AsyncSession, policy: Policy, start: datetime, end: datetime
) -> dict[str, int]:
    column = StatusEntryRow.owner if policy.per == "owner" else StatusEntryRow.team
    rows = await session.execute(
        select(column, func.count())
        .where(
            StatusEntryRow.status.in_(sorted(policy.count.status)),
            StatusEntryRow.entered_at >= start,
            StatusEntryRow.entered_at < end,
        )
        .group_by(column)
    )
    return {group or "unassigned": count for group, count in rows.all()}


def volume_groups(policy: Policy, loaded: LoadedPolicies, counted: Iterable[str]) -> list[str]:
    """Who a volume target applies to: everyone configured (a rep with zero MQLs is the point of
    the report) plus everyone who has entries. People who manage others are not reps unless
    they have entries or a target of their own."""
    policy_set = loaded.policy_set
    if policy.per == "owner":
        managers = {p.manager for p in policy_set.people.values() if p.manager}
        configured: set[str] = set(policy_set.people) - managers
    else:
        configured = set(policy_set.teams)
    return sorted({*configured, *policy.volume_targets, *counted})


async def volume_progress(
    session: AsyncSession, loaded: LoadedPolicies, policy: Policy, at: datetime
) -> tuple[datetime, datetime, list[VolumeProgress]]:
    calendar = loaded.calendars(policy.calendar.default)
    assert policy.period is not None
    start, end = period_bounds(policy.period, at, calendar.timezone)
    counts = await volume_counts(session, policy, start, end)
    groups = volume_groups(policy, loaded, counts)
    rows = [progress(policy, g, counts.get(g, 0), start, end, at, calendar) for g in groups]
    return start, end, rows


def volume_json(
    policy: Policy, start: datetime, end: datetime, rows: list[VolumeProgress]
) -> dict[str, Any]:
    by_group: dict[str, Any] = defaultdict(dict)
    for row in rows:
        by_group[row.group] = {
            "count": row.count,
            "target": row.target,
            "projected": row.projected,
            "elapsed_fraction": round(row.elapsed_fraction, 4),
            "on_pace": row.on_pace,
            "pace": row.pace_text,
        }
    return {
        "policy": policy.id,
        "per": policy.per,
        "period": policy.period,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "groups": dict(by_group),
    }
