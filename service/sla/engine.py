"""The SLA engine: a lead's ordered events + a policy + ``now`` -> its cycles.

A pure fold, re-run from the lead's whole history whenever something changes. That is what makes a
late event, a duplicate, a backtest or "explain this deadline" the same computation instead of
special cases: the answer never depends on arrival order, only on ``occurred_at``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from service.sla.calendar import Calendar, build_calendar
from service.sla.policy import CalendarChoice, CalendarSpec, Policy, Trigger
from service.sla.types import LeadEvent, LeadState, lead_states, value_type

CycleState = Literal["running", "paused", "met", "breached"]
TimerKind = Literal["reminder", "breach", "escalation"]
CYCLE_KINDS = ("response", "attempts")


@value_type
class Pause:
    start: datetime
    end: datetime | None
    event_id: str
    status: str


@value_type
class Timer:
    """A moment a cycle wants attention. ``step`` is unique within the cycle and, with the cycle,
    forms the idempotency key of what it sends."""

    step: str
    kind: TimerKind
    at: datetime
    offset: float  # business seconds since the cycle started: what it reports as elapsed
    index: int = 0  # which reminder/escalation of the policy


@value_type
class CycleResult:
    policy_id: str
    kind: str
    number: int
    started_at: datetime
    start_event_id: str
    target_seconds: int
    calendar: str | None
    state: CycleState
    due_at: datetime | None  # None while paused before the deadline could be reached
    stopped_at: datetime | None
    stop_event_id: str | None
    stop_reason: str | None
    breached_at: datetime | None
    elapsed_business_seconds: float  # up to the stop, or to ``now``
    remaining_business_seconds: float
    pauses: tuple[Pause, ...]
    timers: tuple[Timer, ...]  # every timer that can still matter, whether due yet or not
    owner: str | None
    team: str | None
    attempts: int | None = None
    required: int | None = None

    @property
    def open(self) -> bool:
        return self.stopped_at is None


CalendarLookup = Callable[[str | None], Calendar]


def calendar_lookup(specs: Mapping[str, CalendarSpec]) -> CalendarLookup:
    """Calendars are built once per policy set and shared by every fold."""
    built = {name: build_calendar(spec) for name, spec in specs.items()}
    default = build_calendar(None)

    def lookup(name: str | None) -> Calendar:
        return built[name] if name is not None else default

    return lookup


def choose_calendar(choice: CalendarChoice, lead: LeadState) -> str | None:
    if choice.by_field is not None:
        value = lead.field(choice.by_field)
        if value is not None and str(value) in choice.by_value:
            return choice.by_value[str(value)]
    return choice.default


def matches(policy: Policy, lead: LeadState) -> bool:
    for name, allowed in policy.match.items():
        value = lead.field(name)
        if value is None or str(value) not in allowed:
            return False
    return True


def target_for(policy: Policy, lead: LeadState) -> int:
    for name, by_value in policy.targets.items():
        value = lead.field(name)
        if value is not None and str(value) in by_value:
            return by_value[str(value)]
    if policy.kind == "attempts":
        return policy.within_seconds or 0
    return policy.target_seconds or 0


@dataclass(slots=True)
class _OpenCycle:
    number: int
    started_at: datetime
    start_event_id: str
    target_seconds: int
    calendar: str | None
    pauses: list[Pause] = field(default_factory=list)
    attempts: int = 0
    stopped_at: datetime | None = None
    stop_event_id: str | None = None
    stop_reason: str | None = None
    forced_breach_at: datetime | None = None  # premature disposition (attempts guard)
    owner: str | None = None
    team: str | None = None

    @property
    def paused(self) -> bool:
        return bool(self.pauses) and self.pauses[-1].end is None


def _entered(trigger: Trigger, before: LeadState, after: LeadState) -> bool:
    return after.status != before.status and after.status in trigger.status


def _activity_in(trigger: Trigger, event: LeadEvent) -> bool:
    return event.activity is not None and event.activity.kind in trigger.activity


def derive_cycles(
    policy: Policy,
    events: Sequence[LeadEvent],
    now: datetime,
    calendars: CalendarLookup,
    pinned_targets: Mapping[int, int] | None = None,
    states: Sequence[LeadState] | None = None,
) -> list[CycleResult]:
    """Every cycle of one lead under one ``response`` or ``attempts`` policy.

    ``events`` must be sorted and deduplicated (``sort_and_dedupe``). ``pinned_targets`` keeps the
    target a cycle started with when the policy has since changed (cycle number -> seconds).
    ``states`` are the events' ``lead_states``, when the caller has them already.
    """
    if policy.kind not in CYCLE_KINDS:
        return []
    pinned = pinned_targets or {}
    lead = LeadState(id=events[0].lead.id if events else "")
    closed: list[_OpenCycle] = []
    current: _OpenCycle | None = None
    for event, after in zip(events, states or lead_states(events), strict=True):
        before, lead = lead, after
        if current is not None:
            _advance(policy, current, event, before, lead)
            if current.stopped_at is not None:
                current.owner, current.team = lead.owner, lead.team
                closed.append(current)
                current = None
                if not _entered(policy.start, before, lead):
                    continue
            else:
                continue
        if (
            _entered(policy.start, before, lead)
            and not event.self_originated
            and matches(policy, lead)
        ):
            number = len(closed) + 1
            current = _OpenCycle(
                number=number,
                started_at=event.occurred_at,
                start_event_id=event.event_id,
                target_seconds=pinned.get(number, target_for(policy, lead)),
                calendar=choose_calendar(policy.calendar, lead),
            )
    if current is not None:
        current.owner, current.team = lead.owner, lead.team
        closed.append(current)
    return [_finish(policy, c, now, calendars(c.calendar)) for c in closed]


def _advance(
    policy: Policy, cycle: _OpenCycle, event: LeadEvent, before: LeadState, lead: LeadState
) -> None:
    """Apply one event to an open cycle: count, stop, guard, pause or resume."""
    at = event.occurred_at
    if policy.kind == "attempts" and _activity_in(policy.count, event):
        cycle.attempts += 1
        if cycle.attempts >= (policy.required or 0):
            _stop(cycle, event, f"{cycle.attempts} attempts made")
            return
    if policy.kind == "attempts" and _entered(policy.guard, before, lead):
        cycle.forced_breach_at = at
        _stop(cycle, event, f"disposed as {lead.status} after {cycle.attempts} attempt(s)")
        return
    if _activity_in(policy.stop, event):
        assert event.activity is not None
        _stop(cycle, event, f"activity: {event.activity.kind}")
        return
    if _entered(policy.stop, before, lead):
        _stop(cycle, event, f"status: {lead.status}")
        return
    if lead.deleted and not before.deleted:
        _stop(cycle, event, "lead deleted")
        return
    if cycle.paused:
        if lead.status not in policy.pause.status:
            last = cycle.pauses[-1]
            cycle.pauses[-1] = Pause(last.start, at, last.event_id, last.status)
    elif _entered(policy.pause, before, lead):
        cycle.pauses.append(Pause(at, None, event.event_id, lead.status or ""))


def _stop(cycle: _OpenCycle, event: LeadEvent, reason: str) -> None:
    if cycle.paused:
        last = cycle.pauses[-1]
        cycle.pauses[-1] = Pause(last.start, event.occurred_at, last.event_id, last.status)
    cycle.stopped_at = event.occurred_at
    cycle.stop_event_id = event.event_id
    cycle.stop_reason = reason


class _ActiveTime:
    """Business time of one cycle: its calendar minus its pauses, from its start on."""

    def __init__(self, started_at: datetime, pauses: Sequence[Pause], calendar: Calendar) -> None:
        self.calendar = calendar
        spans: list[tuple[datetime, datetime | None]] = []
        cursor = started_at
        for pause in pauses:
            spans.append((cursor, pause.start))
            if pause.end is None:
                cursor = None  # type: ignore[assignment]
                break
            cursor = pause.end
        if cursor is not None:
            # Open-ended even for a stopped cycle: its deadline is where the clock would have
            # run out, so a cycle met early still has one (reports select by deadline).
            spans.append((cursor, None))
        self.spans = spans

    def instant_after(self, seconds: float) -> datetime | None:
        """When ``seconds`` of active business time will have passed; None if that lies beyond
        an open-ended pause."""
        remaining = seconds
        for start, end in self.spans:
            if end is None:
                return self.calendar.add(start, remaining)
            available = self.calendar.elapsed(start, end)
            if remaining <= available:
                at = self.calendar.add(start, remaining)
                if at <= end:
                    return at
            remaining -= available
        return None

    def elapsed_until(self, until: datetime) -> float:
        total = 0.0
        for start, end in self.spans:
            stop = until if end is None else min(end, until)
            if stop > start:
                total += self.calendar.elapsed(start, stop)
        return total


def elapsed_so_far(
    started_at: datetime, pauses: Sequence[Pause], calendar: Calendar, now: datetime
) -> float:
    """The business time an open cycle has used by ``now``: stored cycles keep the figure of
    their last change, and a running clock moves on without one."""
    return _ActiveTime(started_at, pauses, calendar).elapsed_until(now)


def _finish(policy: Policy, cycle: _OpenCycle, now: datetime, calendar: Calendar) -> CycleResult:
    active = _ActiveTime(cycle.started_at, cycle.pauses, calendar)
    target = cycle.target_seconds
    due = active.instant_after(target)
    end = cycle.stopped_at if cycle.stopped_at is not None else now
    state: CycleState
    breached_at: datetime | None = None
    if cycle.forced_breach_at is not None:
        # a premature disposition breaches at once, unless the window had already run out
        forced = cycle.forced_breach_at
        state, breached_at = "breached", forced if due is None or forced < due else due
    elif due is not None and (due < end if cycle.stopped_at is not None else due <= now):
        # stopped at or before the deadline is met; still running at the deadline is breached
        state, breached_at = "breached", due
    elif cycle.stopped_at is not None:
        state = "met"
    else:
        state = "paused" if cycle.paused else "running"
    elapsed = active.elapsed_until(end)
    timers = _timers(policy, active, target, due) if cycle.stopped_at is None else ()
    return CycleResult(
        policy_id=policy.id,
        kind=policy.kind,
        number=cycle.number,
        started_at=cycle.started_at,
        start_event_id=cycle.start_event_id,
        target_seconds=target,
        calendar=cycle.calendar,
        state=state,
        due_at=due,
        stopped_at=cycle.stopped_at,
        stop_event_id=cycle.stop_event_id,
        stop_reason=cycle.stop_reason,
        breached_at=breached_at,
        elapsed_business_seconds=elapsed,
        remaining_business_seconds=max(0.0, target - elapsed),
        pauses=tuple(cycle.pauses),
        timers=timers,
        owner=cycle.owner,
        team=cycle.team,
        attempts=cycle.attempts if policy.kind == "attempts" else None,
        required=policy.required if policy.kind == "attempts" else None,
    )


def _timers(
    policy: Policy, active: _ActiveTime, target: int, due: datetime | None
) -> tuple[Timer, ...]:
    """The open cycle's schedule. Times that cannot be known yet (inside an open pause) are
    left out; the next fold after the pause ends adds them."""
    timers: list[Timer] = []
    for index, reminder in enumerate(policy.reminders):
        if reminder.at_fraction is not None:
            offset = target * reminder.at_fraction
        else:
            offset = target - (reminder.before_seconds or 0)
        if offset <= 0:
            continue
        at = active.instant_after(offset)
        if at is not None:
            timers.append(Timer(f"reminder-{index}", "reminder", at, offset, index))
    if due is not None:
        timers.append(Timer("breach", "breach", due, float(target)))
    for index, escalation in enumerate(policy.escalations):
        offset = float(target + escalation.after_seconds)
        at = active.instant_after(offset)
        if at is not None:
            timers.append(Timer(f"escalation-{index}", "escalation", at, offset, index))
    return tuple(sorted(timers, key=lambda t: (t.at, t.step)))


def next_fire_at(timers: Iterable[Timer], fired: Iterable[str]) -> datetime | None:
    done = set(fired)
    return min((t.at for t in timers if t.step not in done), default=None)
