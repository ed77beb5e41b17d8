"""Properties of business-time arithmetic, drawn around real DST transitions."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from itertools import pairwise
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from service.sla.calendar import Calendar, Segment, build_calendar
from service.sla.policy import CalendarSpec

US = timedelta(microseconds=1)
DAY_US = 86_400 * 1_000_000

# Zone -> (years with DST to draw from, holidays country, subdivision). Brazil last observed
# DST in 2018-2019; Lord Howe shifts by 30 minutes.
ZONES: dict[str, tuple[range, str, str | None]] = {
    "America/Sao_Paulo": (range(2015, 2019), "BR", "SP"),
    "Europe/Bucharest": (range(2025, 2028), "RO", None),
    "America/New_York": (range(2025, 2028), "US", "NY"),
    "Australia/Lord_Howe": (range(2025, 2028), "AU", "NSW"),
}

Hours = dict[int, tuple[tuple[time, time], ...]]

OFFICE: Hours = {
    **{weekday: ((time(9), time(12)), (time(13), time(18))) for weekday in range(5)},
    5: ((time(9), time(12)),),
}
# Bounds that fall in the skipped or repeated hours of every zone above: New York changes at
# 02:00 (01:00-02:00 repeated), Bucharest at 03:00/04:00, Lord Howe at 02:00 (30 minutes),
# São Paulo at midnight (23:00-24:00 of the Saturday repeated).
NIGHT: Hours = dict.fromkeys(
    range(7),
    (
        (time(0), time(1, 45)),
        (time(2, 15), time(3, 30)),
        (time(9), time(17)),
        (time(23), time(0)),
    ),
)
WHOLE_DAY: Hours = dict.fromkeys(range(7), ((time(0), time(0)),))
KINDS = ("whole-day", "office", "night", "around-the-clock")


@cache
def calendar_for(zone: str, kind: str) -> Calendar:
    _, country, subdivision = ZONES[zone]
    hours: Hours | None = {"whole-day": WHOLE_DAY, "office": OFFICE, "night": NIGHT}.get(kind)
    if kind == "around-the-clock":
        # hours=None with holidays: open around the clock except on public holidays.
        return build_calendar(
            CalendarSpec(name=f"{zone}-{kind}", timezone=zone, holidays_country=country)
        )
    return build_calendar(
        CalendarSpec(
            name=f"{zone}-{kind}",
            timezone=zone,
            hours=hours,
            holidays_country=country if kind == "office" else None,
            holidays_subdivision=subdivision if kind == "office" else None,
        )
    )


@cache
def transitions(zone: str) -> tuple[int, ...]:
    """UTC offset changes of ``zone`` in its drawn years, in epoch microseconds, found by
    scanning hours with zoneinfo directly (independently of the calendar module)."""
    tz = ZoneInfo(zone)
    years = ZONES[zone][0]
    found: list[int] = []
    t = datetime(years.start, 1, 1, tzinfo=UTC)
    end = datetime(years.stop, 1, 1, tzinfo=UTC)
    step = timedelta(hours=1)
    while t < end:
        if t.astimezone(tz).utcoffset() != (t + step).astimezone(tz).utcoffset():
            lo, hi = t, t + step
            while hi - lo > US:
                mid = lo + (hi - lo) // 2
                if mid.astimezone(tz).utcoffset() == lo.astimezone(tz).utcoffset():
                    lo = mid
                else:
                    hi = mid
            found.append((hi - datetime(1970, 1, 1, tzinfo=UTC)) // US)
        t += step
    assert found, zone
    return tuple(found)


def from_us(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


@st.composite
def near_transition(draw: st.DrawFn, zone: str) -> datetime:
    """An instant within four days of one of the zone's offset changes, sometimes exactly on
    it or on a whole local minute, shown in the zone (inputs need not be UTC)."""
    anchor = draw(st.sampled_from(transitions(zone)))
    offset = draw(
        st.one_of(
            st.just(0),
            st.integers(-4 * DAY_US, 4 * DAY_US),
            st.integers(-4 * 24 * 60, 4 * 24 * 60).map(lambda m: m * 60_000_000),
        )
    )
    return from_us(anchor + offset).astimezone(ZoneInfo(zone))


@st.composite
def scenario(draw: st.DrawFn) -> tuple[Calendar, datetime]:
    zone = draw(st.sampled_from(sorted(ZONES)))
    kind = draw(st.sampled_from(KINDS))
    return calendar_for(zone, kind), draw(near_transition(zone))


# Business time in microseconds: up to ten days, with whole hours and minutes likely.
amounts = st.one_of(
    st.integers(0, 10 * DAY_US),
    st.integers(0, 240).map(lambda h: h * 3_600_000_000),
    st.integers(0, 600).map(lambda m: m * 60_000_000),
)

PROPERTY = settings(max_examples=150, deadline=None)


@PROPERTY
@given(scenario(), amounts)
def test_adding_then_measuring_gives_back_the_amount(
    case: tuple[Calendar, datetime], amount: int
) -> None:
    calendar, start = case
    seconds = amount / 1_000_000
    deadline = calendar.add(start, seconds)
    assert deadline.tzinfo is UTC
    assert deadline >= start
    assert calendar.elapsed(start, deadline) == seconds


@PROPERTY
@given(scenario(), amounts)
def test_deadline_never_falls_in_closed_time(case: tuple[Calendar, datetime], amount: int) -> None:
    calendar, start = case
    deadline = calendar.add(start, amount / 1_000_000)
    if amount == 0:
        assert calendar.is_open(deadline)
        assert deadline == calendar.next_open(start)
    else:
        # Inside an open interval, or exactly at the end of one.
        assert calendar.is_open(deadline - US)


@PROPERTY
@given(scenario(), amounts, amounts)
def test_add_is_monotonic(case: tuple[Calendar, datetime], first: int, second: int) -> None:
    calendar, start = case
    low, high = sorted((first, second))
    assert calendar.add(start, low / 1_000_000) <= calendar.add(start, high / 1_000_000)


@PROPERTY
@given(scenario(), st.integers(0, 6 * DAY_US), st.integers(0, 6 * DAY_US))
def test_elapsed_is_additive(case: tuple[Calendar, datetime], gap1: int, gap2: int) -> None:
    calendar, a = case
    # Instant arithmetic in UTC: adding to a local datetime would move its wall clock instead.
    b = a.astimezone(UTC) + timedelta(microseconds=gap1)
    c = b + timedelta(microseconds=gap2)
    whole = round(calendar.elapsed(a, c) * 1_000_000)
    parts = round(calendar.elapsed(a, b) * 1_000_000) + round(calendar.elapsed(b, c) * 1_000_000)
    assert whole == parts
    assert calendar.elapsed(c, a) == 0


@PROPERTY
@given(scenario(), st.integers(1, 6 * DAY_US))
def test_segments_cover_the_span_and_sum_to_elapsed(
    case: tuple[Calendar, datetime], length: int
) -> None:
    calendar, start = case
    # Compare in UTC: an aware datetime in a repeated hour never equals one in another zone.
    start_utc = start.astimezone(UTC)
    end = start_utc + timedelta(microseconds=length)
    segments = calendar.segments(start, end)
    assert segments[0].start == start_utc
    assert segments[-1].end == end
    for before, after in pairwise(segments):
        assert before.end == after.start
    counted = sum(((s.end - s.start) for s in segments if s.counted), timedelta())
    assert counted // US == round(calendar.elapsed(start, end) * 1_000_000)
    for segment in segments:
        assert segment.start < segment.end
        assert calendar.is_open(segment.start) == segment.counted
        assert calendar.is_open(segment.end - US) == segment.counted
    assert list(calendar.open_intervals(start, end)) == _merged_counted(segments)


def _merged_counted(segments: list[Segment]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for s in segments:
        if not s.counted:
            continue
        if merged and merged[-1][1] == s.start:
            merged[-1] = (merged[-1][0], s.end)
        else:
            merged.append((s.start, s.end))
    return merged


def _repeated(local: datetime) -> bool:
    return local.replace(fold=1 - local.fold).utcoffset() != local.utcoffset()


def _wall_clock_says_open(
    calendar: Calendar, hours: dict[int, tuple[tuple[time, time], ...]], at: datetime
) -> bool:
    """Reads the wall clock at ``at`` and checks it against the hours table; no holidays."""
    local = at.astimezone(calendar.timezone)
    wall = local.time().replace(tzinfo=None, fold=0)
    return any(
        begin <= wall and (end == time(0) or wall < end)
        for begin, end in hours.get(local.weekday(), ())
    )


@PROPERTY
@given(st.sampled_from(sorted(ZONES)), st.sampled_from(("whole-day", "night")), st.data())
def test_is_open_agrees_with_the_wall_clock(zone: str, kind: str, data: st.DataObject) -> None:
    # Where a wall time happens once, "open" must mean exactly what the clock on the office
    # wall shows. Repeated hours follow a documented rule instead (first start, last end).
    calendar = calendar_for(zone, kind)
    hours = WHOLE_DAY if kind == "whole-day" else NIGHT
    at = data.draw(near_transition(zone))
    if not _repeated(at.astimezone(calendar.timezone)):
        assert calendar.is_open(at) == _wall_clock_says_open(calendar, hours, at)


@PROPERTY
@given(st.sampled_from(sorted(ZONES)), st.integers(0, 2 * DAY_US), st.data())
def test_whole_day_calendar_counts_real_time(zone: str, length: int, data: st.DataObject) -> None:
    # Local days of 23, 24, 25, 23.5 or 24.5 hours must join into a seamless timeline.
    calendar = calendar_for(zone, "whole-day")
    start = data.draw(near_transition(zone))
    start_utc = start.astimezone(UTC)
    end = start_utc + timedelta(microseconds=length)
    assert round(calendar.elapsed(start, end) * 1_000_000) == length
    assert calendar.add(start, length / 1_000_000) == end
    assert list(calendar.open_intervals(start, end)) == ([(start_utc, end)] if length else [])


def test_drawn_years_have_transitions() -> None:
    # Guards the strategies: each zone really changes its offset in the drawn years.
    for zone in ZONES:
        assert len(transitions(zone)) >= 2 * len(ZONES[zone][0]) - 1
    assert date(2018, 11, 4) in {
        from_us(t).astimezone(ZoneInfo("America/Sao_Paulo")).date()
        for t in transitions("America/Sao_Paulo")
    }
