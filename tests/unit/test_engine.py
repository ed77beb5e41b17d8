"""The pure SLA core: a lead's events + a policy + ``now`` -> cycles, on a 24x7 calendar and on
São Paulo business hours."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from service.sla.calendar import build_calendar
from service.sla.engine import CycleResult, calendar_lookup, derive_cycles, next_fire_at
from service.sla.policy import (
    CalendarChoice,
    CalendarSpec,
    Escalation,
    Policy,
    Reminder,
    Trigger,
)
from service.sla.types import (
    Activity,
    LeadEvent,
    LeadSnapshot,
    StatusChange,
    sort_and_dedupe,
)

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # Monday, 09:00 in São Paulo
SECOND = timedelta(seconds=1)
MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def status_set(*names: str) -> frozenset[str]:
    return frozenset(names)


SAO_PAULO = CalendarSpec(
    name="sao-paulo",
    timezone="America/Sao_Paulo",
    hours={day: ((time(9), time(12)), (time(13), time(18))) for day in range(5)},
    holidays_country="BR",
    holidays_subdivision="SP",
)
CALENDARS = calendar_lookup({"sao-paulo": SAO_PAULO})

FIRST_TOUCH = Policy(
    id="first-touch",
    start=Trigger(status=status_set("mql")),
    stop=Trigger(
        status=status_set("sal", "disqualified", "recycled"),
        activity=status_set("call", "email", "whatsapp"),
    ),
    pause=Trigger(status=status_set("waiting_on_lead")),
    target_seconds=3600,
    targets={"priority": {"high": 900, "low": 4 * 3600}},
    reminders=(Reminder(at_fraction=0.5), Reminder(before_seconds=600)),
    escalations=(Escalation(after_seconds=0), Escalation(after_seconds=7200)),
)
BUSINESS = replace(FIRST_TOUCH, id="business-touch", calendar=CalendarChoice(default="sao-paulo"))
ATTEMPTS = Policy(
    id="attempts",
    kind="attempts",
    start=Trigger(status=status_set("sal")),
    stop=Trigger(status=status_set("sql", "opportunity", "customer")),
    count=Trigger(activity=status_set("call", "email", "whatsapp")),
    required=3,
    within_seconds=7 * 86400,
    guard=Trigger(status=status_set("unreachable", "disqualified")),
)


def ev(
    at: datetime,
    status: str | None = None,
    activity: str | None = None,
    event_id: str | None = None,
    self_originated: bool = False,
    **lead: Any,
) -> LeadEvent:
    kind = "lead.status_changed" if status else "lead.activity" if activity else "lead.updated"
    return LeadEvent(
        event_id=event_id or f"{at.isoformat()}-{status or activity or 'update'}",
        type=kind,  # type: ignore[arg-type]
        occurred_at=at,
        lead=LeadSnapshot(id="L-1", **lead),
        status=StatusChange(to=status) if status else None,
        activity=Activity(kind=activity) if activity else None,
        self_originated=self_originated,
    )


def derive(policy: Policy, now: datetime, *events: LeadEvent) -> list[CycleResult]:
    return derive_cycles(policy, sort_and_dedupe(list(events)), now, CALENDARS)


def one(policy: Policy, now: datetime, *events: LeadEvent) -> CycleResult:
    (cycle,) = derive(policy, now, *events)
    return cycle


# --- start, stop, met, breached -------------------------------------------------------------


def test_a_touch_before_the_deadline_is_met() -> None:
    cycle = one(FIRST_TOUCH, T0 + 2 * HOUR, ev(T0, "mql"), ev(T0 + 20 * MIN, activity="call"))
    assert (cycle.state, cycle.open, cycle.number) == ("met", False, 1)
    assert (cycle.started_at, cycle.stopped_at, cycle.due_at) == (T0, T0 + 20 * MIN, T0 + HOUR)
    assert cycle.breached_at is None
    assert cycle.elapsed_business_seconds == 1200
    assert cycle.stop_reason == "activity: call"
    assert cycle.timers == ()


def test_stopped_exactly_at_the_deadline_is_met_and_a_second_later_breached() -> None:
    at_deadline = one(FIRST_TOUCH, T0 + 3 * HOUR, ev(T0, "mql"), ev(T0 + HOUR, "sal"))
    assert (at_deadline.state, at_deadline.breached_at) == ("met", None)
    late = one(FIRST_TOUCH, T0 + 3 * HOUR, ev(T0, "mql"), ev(T0 + HOUR + SECOND, "sal"))
    assert (late.state, late.breached_at, late.stopped_at) == ("breached", T0 + HOUR,
                                                               T0 + HOUR + SECOND)  # fmt: skip
    assert late.elapsed_business_seconds == 3601


def test_still_running_at_the_deadline_is_breached() -> None:
    before = one(FIRST_TOUCH, T0 + HOUR - SECOND, ev(T0, "mql"))
    assert (before.state, before.open, before.breached_at) == ("running", True, None)
    assert before.remaining_business_seconds == 1
    at = one(FIRST_TOUCH, T0 + HOUR, ev(T0, "mql"))
    assert (at.state, at.open, at.breached_at) == ("breached", True, T0 + HOUR)


def test_no_start_no_cycle_and_other_statuses_do_not_stop() -> None:
    assert derive(FIRST_TOUCH, T0 + DAY, ev(T0, "new"), ev(T0 + MIN, activity="call")) == []
    cycle = one(FIRST_TOUCH, T0 + 30 * MIN, ev(T0, "mql"), ev(T0 + MIN, "nurturing"),
                ev(T0 + 2 * MIN, activity="meeting"))  # fmt: skip
    assert cycle.state == "running"


def test_deleting_the_lead_stops_its_clock() -> None:
    deleted = LeadEvent("del", "lead.deleted", T0 + 5 * MIN, LeadSnapshot(id="L-1"))
    cycle = one(FIRST_TOUCH, T0 + 2 * HOUR, ev(T0, "mql"), deleted)
    assert (cycle.state, cycle.stopped_at, cycle.stop_reason) == ("met", T0 + 5 * MIN,
                                                                  "lead deleted")  # fmt: skip


# --- pauses ---------------------------------------------------------------------------------


def test_a_pause_does_not_consume_time() -> None:
    events = (ev(T0, "mql"), ev(T0 + 10 * MIN, "waiting_on_lead"), ev(T0 + 40 * MIN, "mql"))
    cycle = one(FIRST_TOUCH, T0 + 50 * MIN, *events)
    assert (cycle.state, cycle.due_at) == ("running", T0 + HOUR + 30 * MIN)
    assert cycle.elapsed_business_seconds == 20 * 60
    (pause,) = cycle.pauses
    assert (pause.start, pause.end, pause.status) == (T0 + 10 * MIN, T0 + 40 * MIN,
                                                      "waiting_on_lead")  # fmt: skip
    reminder = next(t for t in cycle.timers if t.step == "reminder-0")
    assert reminder.at == T0 + 30 * MIN + 30 * MIN  # 30 active minutes


def test_an_open_pause_has_no_deadline_and_nothing_to_fire() -> None:
    cycle = one(FIRST_TOUCH, T0 + 10 * HOUR, ev(T0, "mql"), ev(T0 + 10 * MIN, "waiting_on_lead"))
    assert (cycle.state, cycle.due_at, cycle.breached_at) == ("paused", None, None)
    assert cycle.timers == ()  # the 50% reminder lies beyond the pause too
    early = one(FIRST_TOUCH, T0 + HOUR, ev(T0, "mql"), ev(T0 + 40 * MIN, "waiting_on_lead"))
    assert [(t.step, t.at) for t in early.timers] == [("reminder-0", T0 + 30 * MIN)]
    assert cycle.elapsed_business_seconds == 600


def test_pausing_after_the_deadline_does_not_undo_the_breach() -> None:
    cycle = one(FIRST_TOUCH, T0 + 3 * HOUR, ev(T0, "mql"), ev(T0 + 2 * HOUR, "waiting_on_lead"))
    assert (cycle.state, cycle.breached_at) == ("breached", T0 + HOUR)


def test_stopping_while_paused_closes_the_pause() -> None:
    events = (ev(T0, "mql"), ev(T0 + 10 * MIN, "waiting_on_lead"), ev(T0 + 3 * HOUR, "sal"))
    cycle = one(FIRST_TOUCH, T0 + 4 * HOUR, *events)
    assert (cycle.state, cycle.elapsed_business_seconds) == ("met", 600)
    assert cycle.pauses[0].end == T0 + 3 * HOUR


# --- targets, match, cycles -----------------------------------------------------------------


def test_targets_by_priority_at_the_start() -> None:
    high = one(FIRST_TOUCH, T0, ev(T0, "mql", priority="high"))
    low = one(FIRST_TOUCH, T0, ev(T0, "mql", priority="low"))
    other = one(FIRST_TOUCH, T0, ev(T0, "mql", priority="medium"))
    assert [c.target_seconds for c in (high, low, other)] == [900, 4 * 3600, 3600]
    assert high.due_at == T0 + 15 * MIN
    # a priority set after the start does not move the deadline
    later = one(FIRST_TOUCH, T0, ev(T0, "mql"), ev(T0 + MIN, priority="high"))
    assert later.due_at == T0 + HOUR


def test_pinned_targets_keep_the_target_a_cycle_started_with() -> None:
    events = sort_and_dedupe([ev(T0, "mql")])
    (cycle,) = derive_cycles(FIRST_TOUCH, events, T0, CALENDARS, {1: 7200})
    assert (cycle.target_seconds, cycle.due_at) == (7200, T0 + 2 * HOUR)


def test_match_filters_on_lead_fields_when_the_clock_starts() -> None:
    emea = replace(FIRST_TOUCH, match={"team": frozenset({"emea"})})
    assert derive(emea, T0, ev(T0, "mql", team="latam")) == []
    assert derive(emea, T0, ev(T0, "mql")) == []  # no team: no match
    assert len(derive(emea, T0, ev(T0 - MIN, team="emea"), ev(T0, "mql"))) == 1
    # joining the team after the start does not start the clock retroactively
    assert derive(emea, T0, ev(T0, "mql"), ev(T0 + MIN, team="emea")) == []
    # custom fields match through attributes
    health = replace(FIRST_TOUCH, match={"vertical": frozenset({"health"})})
    assert len(derive(health, T0, ev(T0, "mql", attributes={"vertical": "health"}))) == 1


def test_re_entering_the_start_status_starts_a_new_cycle() -> None:
    events = (
        ev(T0, "mql"), ev(T0 + 2 * HOUR, "recycled"),
        ev(T0 + 3 * HOUR, "mql"), ev(T0 + 3 * HOUR + 5 * MIN, activity="email"),
        ev(T0 + 4 * HOUR, "mql", event_id="same-status-again"),
    )  # fmt: skip
    one_, two = derive(FIRST_TOUCH, T0 + 5 * HOUR, *events)
    assert (one_.number, one_.state, one_.breached_at) == (1, "breached", T0 + HOUR)
    assert (two.number, two.state, two.started_at) == (2, "met", T0 + 3 * HOUR)


def test_self_originated_changes_do_not_start_clocks() -> None:
    assert derive(FIRST_TOUCH, T0 + HOUR, ev(T0, "mql", self_originated=True)) == []


# --- reminders and escalations --------------------------------------------------------------


def test_reminders_breach_and_escalations_are_scheduled_once_each() -> None:
    cycle = one(FIRST_TOUCH, T0, ev(T0, "mql"))
    assert [(t.step, t.kind, t.at, t.offset) for t in cycle.timers] == [
        ("reminder-0", "reminder", T0 + 30 * MIN, 1800),
        ("reminder-1", "reminder", T0 + 50 * MIN, 3000),
        ("breach", "breach", T0 + HOUR, 3600),
        ("escalation-0", "escalation", T0 + HOUR, 3600),
        ("escalation-1", "escalation", T0 + 3 * HOUR, 3600 + 7200),
    ]
    assert next_fire_at(cycle.timers, []) == T0 + 30 * MIN
    assert next_fire_at(cycle.timers, ["reminder-0", "reminder-1"]) == T0 + HOUR
    assert next_fire_at(cycle.timers, [t.step for t in cycle.timers]) is None


def test_a_reminder_before_a_short_target_is_dropped_when_it_would_precede_the_start() -> None:
    tight = replace(
        FIRST_TOUCH, reminders=(Reminder(before_seconds=3600), Reminder(at_fraction=0.5))
    )
    cycle = one(tight, T0, ev(T0, "mql", priority="high"))  # 15m target
    assert [t.step for t in cycle.timers if t.kind == "reminder"] == ["reminder-1"]


# --- business hours -------------------------------------------------------------------------


def local(y: int, mo: int, d: int, h: int, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h + 3, mi, tzinfo=UTC)  # São Paulo is UTC-3 all year


def test_business_hours_skip_nights_lunch_weekends_and_holidays() -> None:
    cases = [
        (local(2026, 11, 23, 9), local(2026, 11, 23, 10)),  # Monday morning
        (local(2026, 11, 23, 7), local(2026, 11, 23, 10)),  # before opening
        (local(2026, 11, 23, 11, 30), local(2026, 11, 23, 13, 30)),  # across lunch
        (local(2026, 11, 27, 17, 30), local(2026, 11, 30, 9, 30)),  # Friday evening
        (local(2026, 11, 28, 10), local(2026, 11, 30, 10)),  # Saturday
        (local(2026, 12, 24, 17, 30), local(2026, 12, 28, 9, 30)),  # Christmas Friday
    ]
    for start, due in cases:
        cycle = one(BUSINESS, start, ev(start, "mql"))
        assert cycle.due_at == due, start
        assert cycle.calendar == "sao-paulo"


def test_business_elapsed_counts_open_time_only() -> None:
    start, stop = local(2026, 11, 27, 17, 30), local(2026, 11, 30, 9, 20)
    cycle = one(BUSINESS, stop, ev(start, "mql"), ev(stop, activity="call"))
    assert (cycle.state, cycle.elapsed_business_seconds) == ("met", 50 * 60)
    late = one(BUSINESS, stop + HOUR, ev(start, "mql"), ev(stop + 20 * MIN, activity="call"))
    assert (late.state, late.breached_at) == ("breached", local(2026, 11, 30, 9, 30))


def test_calendar_chosen_by_a_lead_field() -> None:
    by_country = replace(
        FIRST_TOUCH,
        calendar=CalendarChoice(default=None, by_field="country", by_value={"BR": "sao-paulo"}),
    )
    saturday = local(2026, 11, 28, 10)
    assert one(by_country, saturday, ev(saturday, "mql", country="BR")).due_at == local(
        2026, 11, 30, 10
    )
    assert one(by_country, saturday, ev(saturday, "mql", country="PT")).due_at == saturday + HOUR


def test_built_calendars_agree_with_the_lookup() -> None:
    calendar = build_calendar(SAO_PAULO)
    start = local(2026, 11, 27, 17, 30)
    assert calendar.add(start, 3600) == CALENDARS("sao-paulo").add(start, 3600)
    assert build_calendar(None).add(start, 3600) == start + HOUR


# --- attempts -------------------------------------------------------------------------------


def test_attempts_met_at_the_required_count() -> None:
    events = [ev(T0, "sal")] + [ev(T0 + k * DAY, activity="call") for k in (1, 2, 3)]
    cycle = one(ATTEMPTS, T0 + 10 * DAY, *events)
    assert (cycle.state, cycle.attempts, cycle.required) == ("met", 3, 3)
    assert (cycle.stopped_at, cycle.stop_reason) == (T0 + 3 * DAY, "3 attempts made")
    assert cycle.due_at == T0 + 7 * DAY


def test_attempts_breached_when_the_window_ends_short() -> None:
    events = [ev(T0, "sal"), ev(T0 + DAY, activity="call"), ev(T0 + 2 * DAY, activity="email")]
    running = one(ATTEMPTS, T0 + 7 * DAY - SECOND, *events)
    assert (running.state, running.attempts) == ("running", 2)
    breached = one(ATTEMPTS, T0 + 7 * DAY, *events)
    assert (breached.state, breached.breached_at, breached.open) == ("breached", T0 + 7 * DAY,
                                                                     True)  # fmt: skip
    # the third attempt after the window closes the cycle, still breached
    late = one(ATTEMPTS, T0 + 9 * DAY, *events, ev(T0 + 8 * DAY, activity="call"))
    assert (late.state, late.open, late.breached_at) == ("breached", False, T0 + 7 * DAY)


def test_attempts_guard_status_is_a_breach_at_once() -> None:
    events = [ev(T0, "sal"), ev(T0 + DAY, activity="call"), ev(T0 + 2 * DAY, "unreachable")]
    cycle = one(ATTEMPTS, T0 + 2 * DAY, *events)
    assert (cycle.state, cycle.open, cycle.breached_at) == ("breached", False, T0 + 2 * DAY)
    assert cycle.stop_reason == "disposed as unreachable after 1 attempt(s)"


def test_attempts_guard_after_the_window_keeps_the_window_breach() -> None:
    events = [ev(T0, "sal"), ev(T0 + DAY, activity="call"), ev(T0 + 9 * DAY, "disqualified")]
    cycle = one(ATTEMPTS, T0 + 10 * DAY, *events)
    assert (cycle.state, cycle.open) == ("breached", False)
    assert cycle.breached_at == T0 + 7 * DAY  # announced then; disposing later does not move it


def test_attempts_stop_status_before_the_window_ends_is_met() -> None:
    events = [ev(T0, "sal"), ev(T0 + DAY, activity="call"), ev(T0 + 2 * DAY, "sql")]
    cycle = one(ATTEMPTS, T0 + 10 * DAY, *events)
    assert (cycle.state, cycle.attempts, cycle.stop_reason) == ("met", 1, "status: sql")


# --- order independence ---------------------------------------------------------------------

STATUSES = ["new", "mql", "sal", "sql", "recycled", "waiting_on_lead", "disqualified",
            "unreachable"]  # fmt: skip
step = st.tuples(
    # minutes after T0, on a half-hour grid so that simultaneous events are common
    st.integers(min_value=0, max_value=6 * 48).map(lambda k: k * 30),
    st.one_of(
        st.sampled_from(STATUSES).map(lambda s: ("status", s)),
        st.sampled_from(["call", "email", "meeting"]).map(lambda a: ("activity", a)),
        st.sampled_from(["high", "low", None]).map(lambda p: ("priority", p)),
    ),
)


def build(steps: list[tuple[int, tuple[str, str | None]]]) -> list[LeadEvent]:
    events = []
    for index, (minutes, (what, value)) in enumerate(steps):
        at = T0 + timedelta(minutes=minutes)
        event_id = f"e{index:03}"
        if what == "status":
            events.append(ev(at, status=value, event_id=event_id))
        elif what == "activity":
            events.append(ev(at, activity=value, event_id=event_id))
        else:
            events.append(ev(at, event_id=event_id, priority=value))
    return events


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(step, max_size=25),
    data=st.data(),
    now_minutes=st.integers(min_value=0, max_value=10 * 24 * 60),
)
def test_any_arrival_order_and_duplication_gives_the_same_cycles(
    steps: list[tuple[int, tuple[str, str | None]]], data: st.DataObject, now_minutes: int
) -> None:
    events = build(steps)
    canonical = sorted(events, key=lambda e: e.order_key)
    duplicated = (
        events + data.draw(st.lists(st.sampled_from(events), max_size=10)) if events else []
    )
    arrived = data.draw(st.permutations(duplicated))
    now = T0 + timedelta(minutes=now_minutes)
    for policy in (FIRST_TOUCH, BUSINESS, ATTEMPTS):
        expected = derive_cycles(policy, canonical, now, CALENDARS)
        assert derive_cycles(policy, sort_and_dedupe(list(arrived)), now, CALENDARS) == expected
