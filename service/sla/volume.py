"""Marketing's side of the agreement: how many leads entered a status per owner or team in a
period, against a target, with a pace forecast.

Periods are calendar weeks (Monday first), months or quarters in the policy calendar's time zone.
The pace is measured in that calendar's business time when it has hours, so a month with most of
its working days still ahead is not called lost on the first Saturday.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from service.sla.calendar import Calendar
from service.sla.policy import Period, Policy
from service.sla.types import LeadEvent, LeadState, lead_states, value_type


@value_type
class StatusEntry:
    """The lead entered ``status`` at ``at``, owned by ``owner`` in ``team`` at that moment."""

    event_id: str
    status: str
    at: datetime
    owner: str | None
    team: str | None


def status_entries(
    events: Sequence[LeadEvent], states: Sequence[LeadState] | None = None
) -> list[StatusEntry]:
    """Every change of status in a sorted, deduplicated event stream (``states``: the events'
    ``lead_states``, when the caller has them already)."""
    entries = []
    before: LeadState | None = None
    for event, state in zip(events, states or lead_states(events), strict=True):
        if state.status is not None and (before is None or state.status != before.status):
            entries.append(
                StatusEntry(
                    event.event_id, state.status, event.occurred_at, state.owner, state.team
                )
            )
        before = state
    return entries


def period_bounds(period: Period, at: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The period containing ``at``, as aware instants at local midnight."""
    local = at.astimezone(zone).date()
    if period == "week":
        first = local - timedelta(days=local.weekday())
        following = first + timedelta(days=7)
    elif period == "month":
        first = local.replace(day=1)
        following = _add_months(first, 1)
    else:
        first = date(local.year, 3 * ((local.month - 1) // 3) + 1, 1)
        following = _add_months(first, 3)
    return _midnight(first, zone), _midnight(following, zone)


def _add_months(day: date, months: int) -> date:
    index = day.month - 1 + months
    return date(day.year + index // 12, index % 12 + 1, 1)


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone)


@dataclass(frozen=True, slots=True)
class VolumeProgress:
    group: str
    count: int
    target: int
    elapsed_fraction: float  # of the period, in business time of the calendar
    projected: int

    @property
    def on_pace(self) -> bool:
        return self.projected >= self.target

    @property
    def pace_text(self) -> str:
        return f"on pace for {self.projected} of {self.target}"


def progress(
    policy: Policy,
    group: str,
    count: int,
    start: datetime,
    end: datetime,
    now: datetime,
    calendar: Calendar,
) -> VolumeProgress:
    target = policy.volume_targets.get(group, policy.volume_target or 0)
    total = calendar.elapsed(start, end)
    done = calendar.elapsed(start, min(max(now, start), end))
    fraction = done / total if total > 0 else 1.0
    projected = count if fraction >= 1.0 else (round(count / fraction) if fraction > 0 else 0)
    return VolumeProgress(group, count, target, fraction, max(projected, count))
