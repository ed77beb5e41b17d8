"""Why a deadline is where it is: a cycle's span cut into counted and excluded intervals.

Each interval says why it counted or not — business hours, outside hours, weekend, a named
holiday, a closed date, a pause with the event that caused it — and the counted ones add up
exactly to the elapsed business time the cycle reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from service.sla.calendar import Calendar
from service.sla.engine import CycleResult, Pause


@dataclass(frozen=True, slots=True)
class Interval:
    start: datetime
    end: datetime
    counted: bool
    reason: str
    note: str | None = None

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


@dataclass(frozen=True, slots=True)
class Explanation:
    cycle: CycleResult
    until: datetime  # the stop, or now for an open cycle
    intervals: tuple[Interval, ...]

    @property
    def elapsed_business_seconds(self) -> float:
        return sum(i.seconds for i in self.intervals if i.counted)

    @property
    def remaining_business_seconds(self) -> float:
        return max(0.0, self.cycle.target_seconds - self.elapsed_business_seconds)


def explain(cycle: CycleResult, calendar: Calendar, now: datetime) -> Explanation:
    until = cycle.stopped_at if cycle.stopped_at is not None else now
    intervals: list[Interval] = []
    for segment in calendar.segments(cycle.started_at, until):
        cursor = segment.start
        for pause in _overlapping(cycle.pauses, segment.start, segment.end, until):
            pause_start = max(pause.start, segment.start)
            pause_end = min(pause.end or until, segment.end)
            if cursor < pause_start:
                intervals.append(
                    Interval(cursor, pause_start, segment.counted, segment.reason, segment.note)
                )
            reason = f"paused: status {pause.status} (event {pause.event_id})"
            if not segment.counted:
                reason += f"; also {segment.reason}"
            intervals.append(Interval(pause_start, pause_end, False, reason, segment.note))
            cursor = pause_end
        if cursor < segment.end:
            intervals.append(
                Interval(cursor, segment.end, segment.counted, segment.reason, segment.note)
            )
    return Explanation(cycle=cycle, until=until, intervals=tuple(intervals))


def _overlapping(
    pauses: tuple[Pause, ...], start: datetime, end: datetime, until: datetime
) -> list[Pause]:
    return [p for p in pauses if p.start < end and (p.end or until) > start]
