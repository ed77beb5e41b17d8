"""Hand-checked business-time figures: deadlines, DST days, holidays, explanations."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import holidays
import pytest

from service.sla.calendar import TWENTY_FOUR_SEVEN, Calendar, Segment, build_calendar
from service.sla.policy import CalendarSpec

SAO_PAULO = ZoneInfo("America/Sao_Paulo")
BUCHAREST = ZoneInfo("Europe/Bucharest")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")

HOUR = 3600
MON_FRI = range(5)
WHOLE_DAY = ((time(0), time(0)),)


def at(
    zone: ZoneInfo,
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    microsecond: int = 0,
) -> datetime:
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=zone)


def utc(
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    microsecond: int = 0,
) -> datetime:
    return at(ZoneInfo("UTC"), year, month, day, hour, minute, second, microsecond).astimezone(UTC)


def office(
    zone: str,
    opening: time = time(9),
    closing: time = time(17),
    **extra: Any,
) -> Calendar:
    hours = {weekday: ((opening, closing),) for weekday in MON_FRI}
    return build_calendar(CalendarSpec(name=f"office-{zone}", timezone=zone, hours=hours, **extra))


# CONTRACT.md §3: mon-fri 09:00-12:00 + 13:00-18:00, sat 09:00-12:00, BR/SP holidays,
# closed on Christmas Eve 2026.
SAO_PAULO_SPEC = CalendarSpec(
    name="sao-paulo",
    timezone="America/Sao_Paulo",
    hours={
        **{weekday: ((time(9), time(12)), (time(13), time(18))) for weekday in MON_FRI},
        5: ((time(9), time(12)),),
    },
    holidays_country="BR",
    holidays_subdivision="SP",
    closed=frozenset({date(2026, 12, 24)}),
)


@pytest.fixture
def sao_paulo() -> Calendar:
    return build_calendar(SAO_PAULO_SPEC)


def local_day(calendar: Calendar, day: date) -> tuple[datetime, datetime]:
    """A local date's bounds as UTC instants (a skipped midnight stands for the jump)."""
    zone = calendar.timezone
    return (
        datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC),
        datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC),
    )


def assert_covers(segments: list[Segment], start: datetime, end: datetime) -> None:
    assert segments[0].start == start
    assert segments[-1].end == end
    for before, after in pairwise(segments):
        assert before.end == after.start
        assert before.start < before.end


# -- (1) São Paulo, Friday-evening MQL before Carnival 2027 ------------------------------------


def test_holidays_package_treats_carnival_as_optional_in_sao_paulo() -> None:
    # The golden deadlines below rest on this: for BR/SP the `holidays` package lists Carnival
    # (Mon 2027-02-08, Tue 2027-02-09) only in its "optional" category (ponto facultativo), so a
    # calendar with holidays BR/SP works through Carnival unless the dates are closed.
    public = holidays.country_holidays("BR", subdiv="SP", years=2027)
    optional = holidays.country_holidays("BR", subdiv="SP", years=2027, categories=("optional",))
    assert date(2027, 2, 8) not in public
    assert date(2027, 2, 9) not in public
    assert date(2027, 2, 8) in optional


def test_friday_evening_mql_before_carnival_1h(sao_paulo: Calendar) -> None:
    # Fri 2027-02-05 19:30 BRT (UTC-3, no DST since 2019) is after the 18:00 close. Saturday
    # opens 09:00-12:00, so one hour runs out Sat 10:00 BRT = 13:00 UTC.
    mql = at(SAO_PAULO, 2027, 2, 5, 19, 30)
    assert sao_paulo.add(mql, 1 * HOUR) == utc(2027, 2, 6, 13, 0)
    assert sao_paulo.elapsed(mql, utc(2027, 2, 6, 13, 0)) == 1 * HOUR


def test_friday_evening_mql_before_carnival_3h_ends_at_saturday_close(sao_paulo: Calendar) -> None:
    # Three hours are exactly Saturday's 09:00-12:00: the deadline is the closing instant,
    # Sat 12:00 BRT = 15:00 UTC, not Monday's opening.
    mql = at(SAO_PAULO, 2027, 2, 5, 19, 30)
    assert sao_paulo.add(mql, 3 * HOUR) == utc(2027, 2, 6, 15, 0)


def test_friday_evening_mql_before_carnival_4h(sao_paulo: Calendar) -> None:
    # Sat 09:00-12:00 gives 3h; Sunday has no hours; Carnival Monday is a working day for BR/SP
    # (see above), so the last hour is Mon 2027-02-08 09:00-10:00 BRT -> 13:00 UTC.
    mql = at(SAO_PAULO, 2027, 2, 5, 19, 30)
    deadline = sao_paulo.add(mql, 4 * HOUR)
    assert deadline == utc(2027, 2, 8, 13, 0)

    segments = sao_paulo.segments(mql, deadline)
    assert_covers(segments, mql, deadline)
    assert [
        (s.start.astimezone(SAO_PAULO).strftime("%a %H:%M"), s.counted, s.reason) for s in segments
    ] == [
        ("Fri 19:30", False, "outside business hours"),
        ("Sat 09:00", True, "business hours"),
        ("Sat 12:00", False, "outside business hours"),
        ("Sun 00:00", False, "weekend"),
        ("Mon 00:00", False, "outside business hours"),
        ("Mon 09:00", True, "business hours"),
    ]
    assert sum((s.end - s.start).total_seconds() for s in segments if s.counted) == 4 * HOUR


def test_friday_evening_mql_with_carnival_closed(sao_paulo: Calendar) -> None:
    # An office that closes for Carnival lists the dates: Mon 8 and Tue 9 are skipped, so the
    # 4th hour is Wed 2027-02-10 09:00-10:00 BRT -> 13:00 UTC; the 1h deadline is unchanged.
    spec = CalendarSpec(
        name="sao-paulo-carnival",
        timezone=SAO_PAULO_SPEC.timezone,
        hours=SAO_PAULO_SPEC.hours,
        holidays_country="BR",
        holidays_subdivision="SP",
        closed=frozenset({date(2027, 2, 8), date(2027, 2, 9)}),
    )
    calendar = build_calendar(spec)
    mql = at(SAO_PAULO, 2027, 2, 5, 19, 30)
    assert calendar.add(mql, 1 * HOUR) == utc(2027, 2, 6, 13, 0)
    deadline = calendar.add(mql, 4 * HOUR)
    assert deadline == utc(2027, 2, 10, 13, 0)
    reasons = [s.reason for s in calendar.segments(mql, deadline)]
    assert "closed: 2027-02-08" in reasons
    assert "closed: 2027-02-09" in reasons


# -- (2) Bucharest across the end of summer time, Sun 2026-10-25 --------------------------------


def test_bucharest_october_2026_is_a_25_hour_day() -> None:
    # Last Sunday of October 2026 is the 25th: at 04:00 EEST (UTC+3) clocks go back to 03:00
    # EET (UTC+2), so the local day runs 2026-10-24 21:00 UTC -> 2026-10-25 22:00 UTC.
    for calendar in (
        build_calendar(CalendarSpec(name="ro-24h", timezone="Europe/Bucharest")),
        build_calendar(
            CalendarSpec(name="ro-24h-holidays", timezone="Europe/Bucharest", holidays_country="RO")
        ),
    ):
        start, end = local_day(calendar, date(2026, 10, 25))
        assert (start, end) == (utc(2026, 10, 24, 21), utc(2026, 10, 25, 22))
        assert calendar.elapsed(start, end) == 25 * HOUR


def test_bucharest_24x7_local_lead_across_dst() -> None:
    # Sat 2026-10-24 12:00 EEST = 09:00 UTC. 24 business hours on a round-the-clock calendar
    # are 24 real hours: Sun 09:00 UTC = 11:00 EET. The wall clock moved only 23 hours.
    calendar = build_calendar(
        CalendarSpec(name="ro-24h-holidays", timezone="Europe/Bucharest", holidays_country="RO")
    )
    lead = at(BUCHAREST, 2026, 10, 24, 12, 0)
    deadline = calendar.add(lead, 24 * HOUR)
    assert deadline == utc(2026, 10, 25, 9, 0)
    assert deadline.astimezone(BUCHAREST).replace(tzinfo=None) == datetime(2026, 10, 25, 11, 0)

    (segment,) = calendar.segments(lead, deadline)
    assert segment.counted and segment.reason == "business hours"
    assert segment.note == "DST change: clocks went back 1h (Europe/Bucharest)"


def test_bucharest_business_hours_lead_across_dst() -> None:
    # Mon-fri 09:00-17:00. Fri 2026-10-23 16:00 EEST (13:00 UTC) + 2h: 16:00-17:00 on Friday,
    # then Mon 2026-10-26 09:00-10:00 EET (UTC+2 after the change) -> 08:00 UTC.
    calendar = office("Europe/Bucharest")
    lead = at(BUCHAREST, 2026, 10, 23, 16, 0)
    deadline = calendar.add(lead, 2 * HOUR)
    assert deadline == utc(2026, 10, 26, 8, 0)

    segments = calendar.segments(lead, deadline)
    assert_covers(segments, lead, deadline)
    weekend = next(s for s in segments if s.reason == "weekend")
    # Sat 00:00 EEST (Fri 21:00 UTC) to Mon 00:00 EET (Sun 22:00 UTC): 49 real hours.
    assert (weekend.start, weekend.end) == (utc(2026, 10, 23, 21), utc(2026, 10, 25, 22))
    assert weekend.note == "DST change: clocks went back 1h (Europe/Bucharest)"
    assert [s.note for s in segments if s is not weekend] == [None] * (len(segments) - 1)


# -- (3) Two days of business time across Christmas ---------------------------------------------


def test_two_day_target_across_christmas() -> None:
    # "2d" in a policy is 48 hours of business time; on an 8-hour (09:00-17:00) weekday
    # calendar that is six working days. São Paulo time, BR/SP holidays, closed 2026-12-24.
    # From Tue 2026-12-22 10:00: Tue 7h (41 left), Wed 23 8h (33), Thu 24 closed, Fri 25 Natal,
    # weekend, Mon 28 8h (25), Tue 29 8h (17), Wed 30 8h (9), Thu 31 8h (1) — New Year's Eve is
    # only optional for BR/SP —, Fri 2027-01-01 holiday, weekend, Mon 2027-01-04 09:00-10:00.
    calendar = office(
        "America/Sao_Paulo",
        holidays_country="BR",
        holidays_subdivision="SP",
        closed=frozenset({date(2026, 12, 24)}),
    )
    lead = at(SAO_PAULO, 2026, 12, 22, 10, 0)
    deadline = calendar.add(lead, 2 * 24 * HOUR)
    assert deadline == at(SAO_PAULO, 2027, 1, 4, 10, 0)
    assert deadline == utc(2027, 1, 4, 13, 0)

    segments = calendar.segments(lead, deadline)
    assert_covers(segments, lead, deadline)
    excluded = {s.reason for s in segments if not s.counted}
    assert excluded == {
        "outside business hours",
        "weekend",
        "closed: 2026-12-24",
        "holiday: Natal",
        "holiday: Confraternização Universal",
    }
    christmas = next(s for s in segments if s.reason == "holiday: Natal")
    assert (christmas.start, christmas.end) == local_day(calendar, date(2026, 12, 25))
    assert sum((s.end - s.start).total_seconds() for s in segments if s.counted) == 48 * HOUR


# -- (4) A start inside closed time begins at the next opening ---------------------------------


def test_start_on_sunday_begins_monday_morning(sao_paulo: Calendar) -> None:
    # Sun 2027-03-07 15:00 BRT: nothing counts until Mon 09:00 BRT (12:00 UTC).
    sunday = at(SAO_PAULO, 2027, 3, 7, 15, 0)
    assert not sao_paulo.is_open(sunday)
    assert sao_paulo.next_open(sunday) == utc(2027, 3, 8, 12, 0)
    assert sao_paulo.add(sunday, 0) == utc(2027, 3, 8, 12, 0)
    assert sao_paulo.add(sunday, HOUR) == utc(2027, 3, 8, 13, 0)
    assert sao_paulo.elapsed(sunday, utc(2027, 3, 8, 12, 0)) == 0


def test_start_at_closing_instant_is_closed(sao_paulo: Calendar) -> None:
    # Intervals are half-open: 18:00 itself is closed, so 30 minutes from Wed 18:00 BRT end
    # Thu 09:30 BRT (12:30 UTC).
    closing = at(SAO_PAULO, 2027, 3, 3, 18, 0)
    assert not sao_paulo.is_open(closing)
    assert sao_paulo.is_open(closing - timedelta(microseconds=1))
    assert sao_paulo.add(closing, 1800) == utc(2027, 3, 4, 12, 30)


def test_open_instant_is_its_own_next_opening(sao_paulo: Calendar) -> None:
    inside = at(SAO_PAULO, 2027, 3, 3, 10, 17, 3)
    assert sao_paulo.is_open(inside)
    assert sao_paulo.next_open(inside) == inside
    assert sao_paulo.add(inside, 0) == inside
    assert sao_paulo.next_open(inside).tzinfo is UTC


def test_start_on_a_holiday(sao_paulo: Calendar) -> None:
    # Tiradentes, Wed 2027-04-21: the clock starts Thu 09:00 BRT.
    holiday = at(SAO_PAULO, 2027, 4, 21, 10, 0)
    assert not sao_paulo.is_open(holiday)
    assert sao_paulo.add(holiday, 15 * 60) == utc(2027, 4, 22, 12, 15)
    (segment, *_) = sao_paulo.segments(holiday, utc(2027, 4, 22, 12, 15))
    assert segment.reason == "holiday: Tiradentes"


# -- (5) Year-end crossing ----------------------------------------------------------------------


def test_year_end_crossing_new_york() -> None:
    # Thu 2026-12-31 16:00 EST, 09:00-17:00 weekdays, US/NY holidays. One hour ends at the
    # 17:00 close the same day (22:00 UTC); two hours skip New Year's Day (Fri) and the weekend
    # to Mon 2027-01-04 10:00 EST = 15:00 UTC.
    calendar = office("America/New_York", holidays_country="US", holidays_subdivision="NY")
    lead = at(NEW_YORK, 2026, 12, 31, 16, 0)
    assert calendar.add(lead, HOUR) == utc(2026, 12, 31, 22, 0)
    deadline = calendar.add(lead, 2 * HOUR)
    assert deadline == utc(2027, 1, 4, 15, 0)
    reasons = [s.reason for s in calendar.segments(lead, deadline)]
    assert "holiday: New Year's Day" in reasons


def test_year_end_crossing_24x7() -> None:
    start = utc(2026, 12, 31, 23, 30)
    assert TWENTY_FOUR_SEVEN.add(start, HOUR) == utc(2027, 1, 1, 0, 30)
    assert TWENTY_FOUR_SEVEN.elapsed(start, utc(2027, 1, 1, 0, 30)) == HOUR
    assert TWENTY_FOUR_SEVEN.segments(start, utc(2027, 1, 1, 0, 30)) == [
        Segment(start, utc(2027, 1, 1, 0, 30), True, "business hours")
    ]


# -- (6) Several intervals a day ----------------------------------------------------------------


def test_lunch_break(sao_paulo: Calendar) -> None:
    # Wed 2027-03-03, 09:00-12:00 + 13:00-18:00 BRT.
    day = date(2027, 3, 3)
    # 11:30 + 1h: 30 minutes before lunch, 30 after -> 13:30.
    assert sao_paulo.add(at(SAO_PAULO, 2027, 3, 3, 11, 30), HOUR) == at(
        SAO_PAULO, 2027, 3, 3, 13, 30
    )
    # 11:00 + 1h ends exactly at the 12:00 close, not at 13:00.
    assert sao_paulo.add(at(SAO_PAULO, 2027, 3, 3, 11, 0), HOUR) == at(SAO_PAULO, 2027, 3, 3, 12, 0)
    # One microsecond more spills into the afternoon.
    assert sao_paulo.add(at(SAO_PAULO, 2027, 3, 3, 11, 0), HOUR + 1e-6) == at(
        SAO_PAULO, 2027, 3, 3, 13, 0, 0, 1
    )
    assert (
        sao_paulo.elapsed(at(SAO_PAULO, 2027, 3, 3, 11, 0), at(SAO_PAULO, 2027, 3, 3, 14, 0))
        == 2 * HOUR
    )
    assert list(sao_paulo.open_intervals(*local_day(sao_paulo, day))) == [
        (utc(2027, 3, 3, 12), utc(2027, 3, 3, 15)),
        (utc(2027, 3, 3, 16), utc(2027, 3, 3, 21)),
    ]
    assert sao_paulo.elapsed(*local_day(sao_paulo, day)) == 8 * HOUR


def test_open_intervals_are_clipped_and_merged_across_midnight() -> None:
    calendar = build_calendar(
        CalendarSpec(
            name="nights",
            timezone="UTC",
            hours={d: ((time(20), time(0)), (time(0), time(6))) for d in range(7)},
        )
    )
    assert list(calendar.open_intervals(utc(2027, 3, 3, 21), utc(2027, 3, 5, 3))) == [
        (utc(2027, 3, 3, 21), utc(2027, 3, 4, 6)),
        (utc(2027, 3, 4, 20), utc(2027, 3, 5, 3)),
    ]
    assert list(calendar.open_intervals(utc(2027, 3, 3, 21), utc(2027, 3, 3, 21))) == []


# -- DST days and odd wall times -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "day", "hours"),
    [
        # Brazil's last summer times: clocks went back at 00:00 on 2018-02-18 (so the 17th
        # repeats 23:00-24:00) and forward at 00:00 on 2018-11-04 (midnight never happened).
        ("America/Sao_Paulo", date(2018, 2, 17), 25),
        ("America/Sao_Paulo", date(2018, 2, 18), 24),
        ("America/Sao_Paulo", date(2018, 11, 4), 23),
        ("Europe/Bucharest", date(2026, 3, 29), 23),
        ("Europe/Bucharest", date(2026, 10, 25), 25),
        ("America/New_York", date(2026, 3, 8), 23),
        ("America/New_York", date(2026, 11, 1), 25),
        # Lord Howe Island shifts by half an hour.
        ("Australia/Lord_Howe", date(2026, 4, 5), 24.5),
        ("Australia/Lord_Howe", date(2026, 10, 4), 23.5),
        ("Australia/Lord_Howe", date(2026, 10, 5), 24),
    ],
)
def test_whole_local_days_follow_the_clocks(zone: str, day: date, hours: float) -> None:
    calendar = build_calendar(
        CalendarSpec(
            name=f"all-day-{zone}", timezone=zone, hours=dict.fromkeys(range(7), WHOLE_DAY)
        )
    )
    start, end = local_day(calendar, day)
    assert calendar.elapsed(start, end) == hours * HOUR
    assert list(calendar.open_intervals(start, end)) == [(start, end)]


def test_time_max_means_end_of_day() -> None:
    calendar = build_calendar(
        CalendarSpec(
            name="max",
            timezone="Europe/Bucharest",
            hours=dict.fromkeys(range(7), ((time(0), time.max),)),
        )
    )
    start, end = local_day(calendar, date(2026, 10, 25))
    assert calendar.elapsed(start, end) == 25 * HOUR


def test_skipped_midnight_maps_to_the_jump() -> None:
    # São Paulo, 2018-11-04: the clock jumped from 00:00 BRT to 01:00 BRST at 03:00 UTC. A day
    # whose hours start at 00:00 opens at that jump, and the day before ends there.
    calendar = build_calendar(
        CalendarSpec(
            name="sp-all-day",
            timezone="America/Sao_Paulo",
            hours=dict.fromkeys(range(7), WHOLE_DAY),
            closed=frozenset({date(2018, 11, 3)}),
        )
    )
    saturday = at(SAO_PAULO, 2018, 11, 3, 12, 0)
    assert calendar.next_open(saturday) == utc(2018, 11, 4, 3, 0)
    segments = calendar.segments(saturday, utc(2018, 11, 4, 5, 0))
    assert [(s.start, s.end, s.reason, s.note) for s in segments] == [
        (saturday, utc(2018, 11, 4, 3), "closed: 2018-11-03", None),
        (
            utc(2018, 11, 4, 3),
            utc(2018, 11, 4, 5),
            "business hours",
            "DST change: clocks went forward 1h (America/Sao_Paulo)",
        ),
    ]


def test_interval_starting_in_a_skipped_hour_opens_at_the_jump() -> None:
    # New York, Sun 2026-03-08: 02:00 EST jumped to 03:00 EDT at 07:00 UTC. Hours 02:30-04:00
    # open at the jump and close at 04:00 EDT = 08:00 UTC: one real hour.
    calendar = build_calendar(
        CalendarSpec(
            name="ny-night", timezone="America/New_York", hours={6: ((time(2, 30), time(4)),)}
        )
    )
    start, end = local_day(calendar, date(2026, 3, 8))
    assert list(calendar.open_intervals(start, end)) == [(utc(2026, 3, 8, 7), utc(2026, 3, 8, 8))]


def test_repeated_hour_runs_from_first_start_to_last_end() -> None:
    # New York, Sun 2026-11-01: 01:00-02:00 happened twice (EDT 05:00-06:00 UTC, then EST
    # 06:00-07:00 UTC). 01:30-03:00 starts at the first 01:30 (05:30 UTC) and ends at 03:00
    # EST (08:00 UTC); 00:00-01:30 ends at the second 01:30 (06:30 UTC).
    calendar = build_calendar(
        CalendarSpec(
            name="ny-late", timezone="America/New_York", hours={6: ((time(1, 30), time(3)),)}
        )
    )
    start, end = local_day(calendar, date(2026, 11, 1))
    assert list(calendar.open_intervals(start, end)) == [
        (utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 8))
    ]
    calendar = build_calendar(
        CalendarSpec(
            name="ny-early", timezone="America/New_York", hours={6: ((time(0), time(1, 30)),)}
        )
    )
    assert list(calendar.open_intervals(start, end)) == [
        (utc(2026, 11, 1, 4), utc(2026, 11, 1, 6, 30))
    ]


def test_lord_howe_half_hour_note() -> None:
    calendar = build_calendar(
        CalendarSpec(
            name="lh", timezone="Australia/Lord_Howe", hours=dict.fromkeys(range(7), WHOLE_DAY)
        )
    )
    start, end = local_day(calendar, date(2026, 10, 4))
    (segment,) = calendar.segments(start, end)
    assert segment.note == "DST change: clocks went forward 30m (Australia/Lord_Howe)"


# -- segments -----------------------------------------------------------------------------------


def test_segments_sum_to_elapsed_over_a_month(sao_paulo: Calendar) -> None:
    start, end = at(SAO_PAULO, 2026, 12, 1, 7, 45), at(SAO_PAULO, 2027, 1, 8, 14, 5)
    segments = sao_paulo.segments(start, end)
    assert_covers(segments, start, end)
    counted = sum(((s.end - s.start) for s in segments if s.counted), timedelta())
    assert counted.total_seconds() == sao_paulo.elapsed(start, end)
    # Neighbours never repeat a reason: they are merged.
    for before, after in pairwise(segments):
        assert (before.counted, before.reason) != (after.counted, after.reason)
    assert all(s.start.tzinfo is UTC and s.end.tzinfo is UTC for s in segments)
    assert sao_paulo.segments(end, start) == []


def test_extra_open_day() -> None:
    # A Sunday campaign 10:00-14:00, and working through Tiradentes with the usual hours.
    calendar = build_calendar(
        CalendarSpec(
            name="campaign",
            timezone="America/Sao_Paulo",
            hours={d: ((time(9), time(18)),) for d in MON_FRI},
            holidays_country="BR",
            holidays_subdivision="SP",
            open={date(2027, 3, 7): ((time(10), time(14)),), date(2027, 4, 21): ()},
        )
    )
    sunday = local_day(calendar, date(2027, 3, 7))
    assert calendar.elapsed(*sunday) == 4 * HOUR
    assert [(s.counted, s.reason) for s in calendar.segments(*sunday)] == [
        (False, "outside business hours"),
        (True, "extra open day"),
        (False, "outside business hours"),
    ]
    assert calendar.elapsed(*local_day(calendar, date(2027, 4, 21))) == 9 * HOUR


# -- long spans, guards and validation ------------------------------------------------------------


def test_thirty_business_days() -> None:
    # 30 eight-hour days from Mon 2027-03-01 09:00 with no holidays: six full weeks, ending at
    # the Friday 17:00 close of 2027-04-09 (America/New_York switched to EDT on 2027-03-14).
    calendar = office("America/New_York")
    start = at(NEW_YORK, 2027, 3, 1, 9, 0)
    deadline = calendar.add(start, 30 * 8 * HOUR)
    assert deadline == at(NEW_YORK, 2027, 4, 9, 17, 0)
    assert calendar.elapsed(start, deadline) == 30 * 8 * HOUR


def test_a_year_of_business_time() -> None:
    calendar = office("Europe/Bucharest")
    # 2027 has 261 weekdays.
    assert calendar.elapsed(at(BUCHAREST, 2027, 1, 1), at(BUCHAREST, 2028, 1, 1)) == 261 * 8 * HOUR


def test_calendar_without_open_time_refuses_to_add() -> None:
    calendar = build_calendar(CalendarSpec(name="never", timezone="UTC", hours={}))
    with pytest.raises(ValueError, match="no open time"):
        calendar.add(utc(2027, 1, 1), 60)
    with pytest.raises(ValueError, match="no open time"):
        calendar.next_open(utc(2027, 1, 1))
    assert calendar.elapsed(utc(2027, 1, 1), utc(2028, 1, 1)) == 0
    assert not calendar.is_open(utc(2027, 1, 1))


def test_calendar_closed_for_years_refuses_to_add() -> None:
    # Weekly hours exist but every date for years is closed: the search gives up.
    closed = frozenset(date(2027, 1, 1) + timedelta(days=n) for n in range(4 * 366))
    calendar = build_calendar(
        CalendarSpec(name="shut", timezone="UTC", hours={0: ((time(9), time(17)),)}, closed=closed)
    )
    with pytest.raises(ValueError, match="no open time"):
        calendar.add(utc(2027, 1, 1), 60)


def test_24x7_defaults() -> None:
    assert build_calendar(None) is TWENTY_FOUR_SEVEN
    assert TWENTY_FOUR_SEVEN.name is None
    assert TWENTY_FOUR_SEVEN.timezone == ZoneInfo("UTC")
    start = at(SAO_PAULO, 2027, 2, 5, 19, 30)
    assert TWENTY_FOUR_SEVEN.add(start, 90.5) == utc(2027, 2, 5, 22, 31, 30, 500000)
    assert TWENTY_FOUR_SEVEN.add(start, 90.5).tzinfo is UTC
    assert TWENTY_FOUR_SEVEN.elapsed(start, start - timedelta(seconds=1)) == 0


def test_equal_specs_share_a_calendar() -> None:
    # Policy reloads build new but equal specs; they get the same calendar and its cache.
    assert SAO_PAULO_SPEC.hours is not None
    copy = replace(SAO_PAULO_SPEC, hours=dict(SAO_PAULO_SPEC.hours))
    assert build_calendar(SAO_PAULO_SPEC) is build_calendar(copy)
    assert build_calendar(replace(copy, name="other")) is not build_calendar(SAO_PAULO_SPEC)


def test_naive_datetimes_are_rejected(sao_paulo: Calendar) -> None:
    naive = datetime(2027, 3, 3, 10, 0)
    aware = at(SAO_PAULO, 2027, 3, 3, 10, 0)
    for call in (
        lambda: sao_paulo.add(naive, 60),
        lambda: sao_paulo.is_open(naive),
        lambda: sao_paulo.next_open(naive),
        lambda: sao_paulo.elapsed(naive, aware),
        lambda: sao_paulo.elapsed(aware, naive),
        lambda: sao_paulo.segments(aware, naive),
        lambda: sao_paulo.open_intervals(naive, aware),
        lambda: TWENTY_FOUR_SEVEN.add(naive, 60),
    ):
        with pytest.raises(ValueError, match="timezone-aware"):
            call()
    with pytest.raises(ValueError, match="negative"):
        sao_paulo.add(aware, -1)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"timezone": "Mars/Olympus_Mons"}, "unknown time zone"),
        ({"holidays_country": "XX"}, "unknown holidays country"),
        ({"holidays_country": "BR", "holidays_subdivision": "ZZ"}, "unknown holidays subdivision"),
        ({"holidays_subdivision": "SP"}, "needs a holidays country"),
        ({"hours": {0: ((time(22), time(2)),)}}, "ends before it starts"),
        ({"hours": {7: ((time(9), time(17)),)}}, "weekday"),
    ],
)
def test_bad_specs_are_rejected(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_calendar(CalendarSpec(name="bad", **changes))


def test_lowercase_subdivision_is_accepted() -> None:
    calendar = build_calendar(
        CalendarSpec(
            name="sp-lower",
            timezone="America/Sao_Paulo",
            holidays_country="br",
            holidays_subdivision="sp",
        )
    )
    # 2027-07-09, Revolução Constitucionalista, is a São Paulo state holiday.
    assert not calendar.is_open(at(SAO_PAULO, 2027, 7, 9, 12))


def test_clocks_going_back_across_midnight() -> None:
    # Antarctica/Casey, 2010-03-04 15:00 UTC: clocks went from 02:00 (+11) on the 5th back to
    # 23:00 (+08) on the 4th. A date runs until the next one first begins (13:00 UTC), so the
    # second 23:00-24:00 of the 4th belongs to the 5th, which is open here while the 4th is not.
    calendar = build_calendar(
        CalendarSpec(
            name="casey",
            timezone="Antarctica/Casey",
            hours=dict.fromkeys(range(7), WHOLE_DAY),
            closed=frozenset({date(2010, 3, 4)}),
        )
    )
    repeated = utc(2010, 3, 4, 15, 30)
    assert repeated.astimezone(calendar.timezone).date() == date(2010, 3, 4)
    assert calendar.is_open(repeated)
    assert calendar.next_open(repeated) == repeated
    assert [
        (s.start, s.end, s.reason, s.note)
        for s in calendar.segments(utc(2010, 3, 4, 12), utc(2010, 3, 4, 16))
    ] == [
        (utc(2010, 3, 4, 12), utc(2010, 3, 4, 13), "closed: 2010-03-04", None),
        (
            utc(2010, 3, 4, 13),
            utc(2010, 3, 4, 16),
            "business hours",
            "UTC offset change: clocks went back 3h (Antarctica/Casey)",
        ),
    ]
