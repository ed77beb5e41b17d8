"""Business time: opening hours in an IANA time zone, with holidays and closed dates.

A lead's SLA clock only runs while its calendar is open, so every deadline, reminder and
"how long did sales take" figure goes through this module. It is pure: instants come in as
arguments and go out as values; nothing here reads a clock or does I/O.

How opening hours become instants
---------------------------------
Hours are written in local wall time per weekday, and the truth is built one local date at a
time: a date's intervals are the ones of its entry in ``open`` (an extra open date), else none if
it is a holiday or a ``closed`` date, else its weekday's. Each wall-clock interval is then turned
into a UTC interval with ``zoneinfo``, so days are as long as the clocks make them:

* An interval end of ``00:00`` (or ``time.max``, 23:59:59.999999) means the end of that day,
  "24:00", i.e. the instant the next date begins. A whole day ``00:00-00:00`` is therefore 23 h
  or 25 h long on DST days, and consecutive whole days join without a gap.
* A wall time the clocks skip (e.g. 00:30 on a São Paulo spring-forward night, when the clock
  jumped from 00:00 to 01:00) stands for the instant of the jump: an interval that starts or
  ends inside the gap starts or ends when the clock jumps.
* A wall time the clocks show twice runs from the first moment the clock shows the start
  (``fold=0``) to the last moment it shows the end (``fold=1``). An hour repeated inside opening
  hours is worked twice, like any other hour on the clock.
* A date runs from the first moment its wall clock reads 00:00 to the first moment the next
  date's does. Where clocks went back across midnight (Antarctica/Casey, 2010), the replayed
  minutes of the earlier date belong to the later one, so dates never overlap.

Arithmetic is done in integer microseconds since the Unix epoch, so adding business time and
measuring it again gives back exactly the same amount; floats only appear at the API edge.
Per-date intervals are computed once and cached on the (immutable) calendar, and walks go day by
day, so a month-long target or a year-long report costs a few hundred dictionary lookups.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays as holidays_package

from service.sla.policy import CalendarSpec

__all__ = ["TWENTY_FOUR_SEVEN", "Calendar", "Segment", "build_calendar"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_MIDNIGHT = time(0, 0)
_WEEKEND = (5, 6)
# A calendar that stays shut this long is misconfigured; adding time to it would never finish.
_MAX_CLOSED_DAYS = 3 * 366
# Per-date entries are small, but a long-lived process asked about arbitrary dates should not
# grow without bound.
_DAY_CACHE_LIMIT = 50_000

# A local interval as configured: start wall time, end wall time or None for "24:00".
_LocalSpan = tuple[time, time | None]


@dataclass(frozen=True, slots=True)
class Segment:
    """A piece of a span of time, counted as business time or not, with the reason why.

    ``reason`` is one of "business hours", "extra open day", "outside business hours",
    "weekend", "holiday: <name>" or "closed: <YYYY-MM-DD>". ``note`` flags a UTC offset change
    inside the segment, where wall-clock and real durations differ.
    """

    start: datetime
    end: datetime
    counted: bool
    reason: str
    note: str | None = None


class _Day:
    """One local date, resolved to UTC microseconds: its span, open intervals and reasons."""

    __slots__ = ("closed_reason", "end", "intervals", "open_reason", "shift", "start")

    def __init__(
        self,
        start: int,
        end: int,
        intervals: tuple[tuple[int, int], ...],
        open_reason: str,
        closed_reason: str,
        shift: tuple[int, int, bool] | None,
    ) -> None:
        self.start = start
        self.end = end
        self.intervals = intervals
        self.open_reason = open_reason
        self.closed_reason = closed_reason
        # (instant, offset delta, whether daylight saving changed) of a UTC offset change
        self.shift = shift


def _to_us(at: datetime, what: str) -> int:
    try:
        # Subtracting an aware epoch rejects naive datetimes (and non-datetimes) for us.
        return (at - _EPOCH) // _US
    except TypeError:
        if isinstance(at, datetime):
            raise ValueError(f"{what} must be timezone-aware, got naive {at.isoformat()}") from None
        raise TypeError(f"{what} must be a datetime, got {type(at).__name__}") from None


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _seconds_to_us(seconds: float) -> int:
    if type(seconds) is int:  # whole seconds, as policies hold them
        amount = seconds * 1_000_000
    else:
        try:
            # timedelta rounds to the nearest microsecond (half to even), exactly.
            amount = timedelta(seconds=seconds) // _US
        except (OverflowError, ValueError, TypeError) as exc:
            raise ValueError(
                f"business time must be a finite number of seconds: {seconds!r}"
            ) from exc
    if amount < 0:
        raise ValueError(f"business time must not be negative: {seconds!r}")
    return amount


def _format_shift(delta_us: int) -> str:
    seconds = abs(delta_us) // 1_000_000
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    return text + (f"{secs}s" if secs or not text else "")


def _normalize_spans(
    spans: tuple[tuple[time, time], ...] | Any, where: str
) -> tuple[_LocalSpan, ...]:
    result: list[_LocalSpan] = []
    for span in spans:
        try:
            start, end = span
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: an interval must be a (start, end) pair: {span!r}") from exc
        if not isinstance(start, time) or not isinstance(end, time):
            raise ValueError(f"{where}: interval bounds must be times: {span!r}")
        start = start.replace(tzinfo=None, fold=0)
        end = end.replace(tzinfo=None, fold=0)
        if start == time.max:
            raise ValueError(f"{where}: an interval cannot start at the end of the day")
        closing: time | None = None if end in (_MIDNIGHT, time.max) else end
        if closing is not None and closing <= start:
            raise ValueError(
                f"{where}: interval {start.isoformat()}-{end.isoformat()} ends before it starts"
                " (split hours that run past midnight across two days)"
            )
        result.append((start, closing))
    return tuple(result)


def _load_holidays(
    country: str, subdivision: str | None, where: str, categories: tuple[str, ...] = ("public",)
) -> Any:
    code = country.strip().upper()
    try:
        probe = holidays_package.country_holidays(code)
    except NotImplementedError as exc:
        raise ValueError(f"{where}: unknown holidays country {country!r}") from exc
    subdiv = subdivision
    if subdiv is not None and subdiv not in probe.subdivisions:
        # Accept "sp" for "SP"; names such as "São Paulo Capital" must match exactly.
        if subdiv.upper() in probe.subdivisions:
            subdiv = subdiv.upper()
        else:
            raise ValueError(
                f"{where}: unknown holidays subdivision {subdivision!r} for {code};"
                f" known: {', '.join(probe.subdivisions)}"
            )
    # Holiday names in the country's own language, whatever the process locale says, so that
    # explanations do not depend on the machine that computed them.
    unknown = sorted(set(categories) - set(probe.supported_categories))
    if unknown:
        raise ValueError(
            f"{where}: unknown holidays categories {', '.join(unknown)} for {code};"
            f" known: {', '.join(probe.supported_categories)}"
        )
    return holidays_package.country_holidays(
        code, subdiv=subdiv, language=probe.default_language, categories=categories
    )


class Calendar:
    """Opening hours in a time zone; immutable once built (its per-date cache only memoizes).

    Use :func:`build_calendar`, which validates the spec and shares calendars between callers.
    """

    name: str | None
    timezone: ZoneInfo

    def __init__(self, spec: CalendarSpec | None = None) -> None:
        where = f"calendar {spec.name!r}" if spec is not None else "calendar"
        self.name = spec.name if spec is not None else None
        zone_key = spec.timezone if spec is not None else "UTC"
        try:
            self.timezone = ZoneInfo(zone_key)
        except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
            raise ValueError(f"{where}: unknown time zone {zone_key!r}") from exc

        whole_day: tuple[_LocalSpan, ...] = ((_MIDNIGHT, None),)
        hours = spec.hours if spec is not None else None
        if hours is None:
            self._weekly: tuple[tuple[_LocalSpan, ...], ...] = (whole_day,) * 7
        else:
            for weekday in hours:
                if not isinstance(weekday, int) or not 0 <= weekday <= 6:
                    raise ValueError(f"{where}: weekday must be 0 (Monday) to 6, got {weekday!r}")
            self._weekly = tuple(
                _normalize_spans(hours.get(weekday, ()), f"{where}, weekday {weekday}")
                for weekday in range(7)
            )
        self._closed: frozenset[date] = spec.closed if spec is not None else frozenset()
        self._extra: dict[date, tuple[_LocalSpan, ...]] = {
            day: _normalize_spans(spans, f"{where}, open {day.isoformat()}")
            for day, spans in (spec.open.items() if spec is not None else ())
        }
        self._holidays: Any = None
        self._holidays_lock = threading.Lock()
        if spec is not None and spec.holidays_country:
            self._holidays = _load_holidays(
                spec.holidays_country,
                spec.holidays_subdivision,
                where,
                tuple(spec.holidays_categories),
            )
        elif spec is not None and spec.holidays_subdivision:
            raise ValueError(f"{where}: a holidays subdivision needs a holidays country")

        # Around the clock with no exceptions: every instant counts, whatever the zone says.
        self._always_open = (
            hours is None and self._holidays is None and not self._closed and not self._extra
        )
        self._has_weekly_hours = any(self._weekly)
        self._last_extra = max((d.toordinal() for d in self._extra), default=0)
        self._days: dict[int, _Day] = {}

    def __repr__(self) -> str:
        return f"Calendar(name={self.name!r}, timezone={self.timezone.key!r})"

    # -- public API ----------------------------------------------------------------------------

    def is_open(self, at: datetime) -> bool:
        t = _to_us(at, "at")
        if self._always_open:
            return True
        _, day = self._locate(t, self._local_ordinal(at))
        return any(start <= t < end for start, end in day.intervals)

    def next_open(self, at: datetime) -> datetime:
        """``at`` itself if the calendar is open then, else the next opening instant."""
        t = _to_us(at, "at")
        if self._always_open:
            return _from_us(t)
        return _from_us(self._add_us(t, 0, self._local_ordinal(at), at))

    def open_intervals(self, start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Open time within ``[start, end)`` as UTC pairs, contiguous pieces merged."""
        s, e = _to_us(start, "start"), _to_us(end, "end")
        if e <= s:
            return iter(())
        if self._always_open:
            return iter(((_from_us(s), _from_us(e)),))
        return self._merged_intervals(s, e, self._local_ordinal(start))

    def elapsed(self, start: datetime, end: datetime) -> float:
        """Business seconds in ``[start, end)``; 0 when ``end <= start``."""
        s, e = _to_us(start, "start"), _to_us(end, "end")
        if e <= s:
            return 0.0
        if self._always_open:
            return (e - s) / 1_000_000
        total = 0
        for a, b in self._walk_intervals(s, e, self._local_ordinal(start)):
            total += b - a
        return total / 1_000_000

    def add(self, start: datetime, seconds: float) -> datetime:
        """The instant at which ``seconds`` of business time have elapsed since ``start``.

        A deadline never lies in closed time: when the amount runs out exactly as an interval
        closes, the deadline is the closing instant, not the next opening. ``add(start, 0)`` is
        :meth:`next_open`.
        """
        t = _to_us(start, "start")
        amount = _seconds_to_us(seconds)
        if self._always_open:
            return _from_us(t + amount)
        return _from_us(self._add_us(t, amount, self._local_ordinal(start), start))

    def segments(self, start: datetime, end: datetime) -> list[Segment]:
        """``[start, end)`` cut into counted and excluded pieces with reasons, for explanations.

        Pieces cover the span without gaps; neighbours with the same reason are merged, so a
        weekend is one segment. The counted ones add up to :meth:`elapsed` exactly.
        """
        s, e = _to_us(start, "start"), _to_us(end, "end")
        if e <= s:
            return []
        pieces: list[tuple[int, int, bool, str]] = []
        shifts: list[tuple[int, int, bool]] = []

        def push(a: int, b: int, counted: bool, reason: str) -> None:
            if a >= b:
                return
            if pieces and pieces[-1][2] == counted and pieces[-1][3] == reason:
                pieces[-1] = (pieces[-1][0], b, counted, reason)
            else:
                pieces.append((a, b, counted, reason))

        cursor = s
        ordinal, day = self._locate(s, self._local_ordinal(start))
        while cursor < e:
            if day.shift is not None and s <= day.shift[0] < e:
                shifts.append(day.shift)
            for a, b in day.intervals:
                if b <= cursor:
                    continue
                if a >= e:
                    break
                push(cursor, a, False, day.closed_reason)
                opened = max(a, cursor)
                cursor = min(b, e)
                push(opened, cursor, True, day.open_reason)
            stop = min(day.end, e)
            push(cursor, stop, False, day.closed_reason)
            cursor = max(cursor, stop)
            ordinal += 1
            day = self._day(ordinal)

        zone = self.timezone.key
        result: list[Segment] = []
        for a, b, counted, reason in pieces:
            notes = [
                f"{'DST' if dst else 'UTC offset'} change: clocks went "
                f"{'forward' if delta > 0 else 'back'} {_format_shift(delta)} ({zone})"
                for at, delta, dst in shifts
                if a <= at < b
            ]
            result.append(
                Segment(_from_us(a), _from_us(b), counted, reason, "; ".join(notes) or None)
            )
        return result

    # -- internals -----------------------------------------------------------------------------

    def _local_ordinal(self, at: datetime) -> int:
        return at.astimezone(self.timezone).toordinal()

    def _locate(self, t: int, ordinal: int) -> tuple[int, _Day]:
        """The day whose span holds ``t``, starting from its local date."""
        day = self._day(ordinal)
        # Only zones whose clocks went back across midnight can disagree with the local date.
        while t >= day.end:
            ordinal += 1
            day = self._day(ordinal)
        while t < day.start:
            ordinal -= 1
            day = self._day(ordinal)
        return ordinal, day

    def _merged_intervals(
        self, s: int, e: int, ordinal: int
    ) -> Iterator[tuple[datetime, datetime]]:
        pending: tuple[int, int] | None = None
        for a, b in self._walk_intervals(s, e, ordinal):
            if pending is not None and pending[1] == a:
                pending = (pending[0], b)
                continue
            if pending is not None:
                yield _from_us(pending[0]), _from_us(pending[1])
            pending = (a, b)
        if pending is not None:
            yield _from_us(pending[0]), _from_us(pending[1])

    def _walk_intervals(self, s: int, e: int, ordinal: int) -> Iterator[tuple[int, int]]:
        ordinal, day = self._locate(s, ordinal)
        while day.start < e:
            for a, b in day.intervals:
                if b <= s:
                    continue
                if a >= e:
                    return
                yield max(a, s), min(b, e)
            ordinal += 1
            day = self._day(ordinal)

    def _add_us(self, t: int, amount: int, ordinal: int, start: datetime) -> int:
        ordinal, day = self._locate(t, ordinal)
        remaining = amount
        idle_days = 0
        while True:
            for a, b in day.intervals:
                if b <= t:
                    continue
                if a > t:
                    t = a
                available = b - t
                if remaining <= available:
                    return t + remaining
                remaining -= available
                t = b
                idle_days = -1
            idle_days += 1
            if idle_days > _MAX_CLOSED_DAYS or (
                not self._has_weekly_hours and ordinal >= self._last_extra
            ):
                raise ValueError(
                    f"calendar {self.name!r} has no open time left after"
                    f" {_from_us(t).isoformat()} (searched from {start.isoformat()})"
                )
            ordinal += 1
            day = self._day(ordinal)

    def _day(self, ordinal: int) -> _Day:
        day = self._days.get(ordinal)
        if day is None:
            day = self._build_day(ordinal)
            if len(self._days) >= _DAY_CACHE_LIMIT:
                self._days.clear()
            self._days[ordinal] = day
        return day

    def _build_day(self, ordinal: int) -> _Day:
        local_date = date.fromordinal(ordinal)
        day_start = self._wall_to_us(local_date, _MIDNIGHT, 0)
        day_end = self._wall_to_us(date.fromordinal(ordinal + 1), _MIDNIGHT, 0)
        weekday = local_date.weekday()
        open_reason = "business hours"
        extra = self._extra.get(local_date)
        holiday: str | None = None
        if self._holidays is not None:
            # The holidays object fills in a year on first look-up; keep threads from doing it
            # twice at once.
            with self._holidays_lock:
                holiday = self._holidays.get(local_date)
        if extra is not None:
            # An extra open date with no hours of its own keeps its weekday's (e.g. working
            # through a holiday as on any other day).
            spans = extra or self._weekly[weekday]
            open_reason = "extra open day"
            closed_reason = "outside business hours"
        elif holiday is not None:
            spans = ()
            closed_reason = f"holiday: {holiday}"
        elif local_date in self._closed:
            spans = ()
            closed_reason = f"closed: {local_date.isoformat()}"
        else:
            spans = self._weekly[weekday]
            closed_reason = (
                "weekend" if not spans and weekday in _WEEKEND else "outside business hours"
            )

        converted = sorted(
            (
                max(day_start, self._wall_to_us(local_date, begin, 0)),
                self._end_to_us(local_date, finish, day_end),
            )
            for begin, finish in spans
        )
        intervals: list[tuple[int, int]] = []
        for a, b in converted:
            if a >= b:
                continue  # wholly inside a skipped hour
            if intervals and a <= intervals[-1][1]:
                intervals[-1] = (intervals[-1][0], max(intervals[-1][1], b))
            else:
                intervals.append((a, b))

        shift: tuple[int, int, bool] | None = None
        before = self._offset_at(day_start - 1)
        after = self._offset_at(day_end - 1)
        if before != after:
            at = self._first_instant_with_offset(day_start, day_end - 1, after)
            dst_changed = self._dst_at(day_start - 1) != self._dst_at(at)
            shift = (at, after - before, dst_changed)
        return _Day(day_start, day_end, tuple(intervals), open_reason, closed_reason, shift)

    def _end_to_us(self, day: date, finish: time | None, day_end: int) -> int:
        # The last moment the clock shows the end, so a repeated hour is worked in full.
        return day_end if finish is None else min(day_end, self._wall_to_us(day, finish, 1))

    def _local(self, us: int) -> datetime:
        return _from_us(us).astimezone(self.timezone)

    def _offset_at(self, us: int) -> int:
        offset = self._local(us).utcoffset()
        assert offset is not None  # a ZoneInfo always knows its offset
        return offset // _US

    def _dst_at(self, us: int) -> timedelta | None:
        return self._local(us).dst()

    def _first_instant_with_offset(self, lo: int, hi: int, offset: int) -> int:
        """First instant in ``[lo, hi]`` at which the zone's offset is ``offset`` (the one at
        ``hi``); ``lo`` and ``hi`` bracket a single change."""
        while lo < hi:
            mid = (lo + hi) // 2
            if self._offset_at(mid) == offset:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def _wall_to_us(self, day: date, wall: time, fold: int) -> int:
        local = datetime.combine(day, wall, tzinfo=self.timezone).replace(fold=fold)
        us = (local - _EPOCH) // _US
        if self._local(us).replace(tzinfo=None) == local.replace(tzinfo=None):
            return us
        # Skipped by a forward jump: the two folds land either side of the jump; the wall time
        # stands for the instant the clock jumped.
        early = (local.replace(fold=1) - _EPOCH) // _US
        late = (local.replace(fold=0) - _EPOCH) // _US
        lo, hi = min(early, late), max(early, late)
        return self._first_instant_with_offset(lo, hi, self._offset_at(hi))


TWENTY_FOUR_SEVEN = Calendar(None)

_BUILT: dict[object, Calendar] = {}
_BUILT_LIMIT = 256


def _spec_key(spec: CalendarSpec) -> object:
    def spans_key(spans: Any) -> tuple[Any, ...]:
        return tuple(tuple(span) for span in spans)

    hours: Mapping[int, Any] | None = spec.hours
    return (
        spec.name,
        spec.timezone,
        None
        if hours is None
        else tuple(sorted((weekday, spans_key(spans)) for weekday, spans in hours.items())),
        spec.holidays_country,
        spec.holidays_subdivision,
        tuple(spec.holidays_categories),
        frozenset(spec.closed),
        tuple(sorted((day, spans_key(spans)) for day, spans in spec.open.items())),
    )


def build_calendar(spec: CalendarSpec | None) -> Calendar:
    """The calendar for ``spec`` (``None``: around the clock in UTC).

    Raises ValueError for an unknown time zone, holidays country or subdivision, or malformed
    hours. Equal specs share one calendar, so its per-date cache survives policy reloads and
    per-lead look-ups.
    """
    if spec is None:
        return TWENTY_FOUR_SEVEN
    try:
        key = _spec_key(spec)
        hash(key)
    except TypeError:
        return Calendar(spec)
    calendar = _BUILT.get(key)
    if calendar is None:
        calendar = Calendar(spec)
        if len(_BUILT) >= _BUILT_LIMIT:
            _BUILT.clear()
        _BUILT[key] = calendar
    return calendar
