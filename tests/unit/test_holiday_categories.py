"""Brazil's Carnival is an optional day off, not a public holiday: calendars close on it only
when the policy file asks for the ``optional`` category."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from service.policy_file import PolicyFileError, load_policy_text
from service.sla.calendar import build_calendar

FILE = """
calendars:
  sp:
    timezone: America/Sao_Paulo
    hours: {{mon-fri: ["09:00-12:00", "13:00-18:00"]}}
    holidays: {{country: BR, subdivision: SP{extra}}}
channels: {{log: {{type: log}}}}
policies:
  - id: first-touch
    start: {{status: [mql]}}
    stop: {{activity: [call]}}
    target: 4h
    calendar: sp
"""
# Friday 2027-02-05 17:30 in São Paulo (20:30 UTC), the Friday before Carnival.
FRIDAY_EVENING = datetime(2027, 2, 5, 20, 30, tzinfo=UTC)


def deadline(extra: str) -> datetime:
    policy_set = load_policy_text(FILE.format(extra=extra), "p.yaml", {})
    return build_calendar(policy_set.calendars["sp"]).add(FRIDAY_EVENING, 4 * 3600)


def test_public_holidays_only_count_carnival_as_a_working_day() -> None:
    # 17:30-18:00 Friday (30m), then Monday 09:00-12:00 (3h) and 13:00-13:30 (30m)
    assert deadline("") == datetime(2027, 2, 8, 16, 30, tzinfo=UTC)


def test_optional_category_closes_carnival_and_ash_wednesday() -> None:
    # Mon 8 and Tue 9 (Carnival) and Wed 10 (Ash Wednesday) closed: Thursday 13:30 local
    assert deadline(", categories: [public, optional]") == datetime(2027, 2, 11, 16, 30, tzinfo=UTC)
    segments = build_calendar(
        load_policy_text(
            FILE.format(extra=", categories: [public, optional]"), "p.yaml", {}
        ).calendars["sp"]
    ).segments(FRIDAY_EVENING, datetime(2027, 2, 11, 12, tzinfo=UTC))
    assert any(s.reason.startswith("holiday: Carnaval") for s in segments), segments


def test_unknown_category_is_a_policy_error_with_its_line() -> None:
    with pytest.raises(PolicyFileError) as error:
        load_policy_text(FILE.format(extra=", categories: [bank]"), "p.yaml", {})
    assert str(error.value.errors[0]).startswith("p.yaml:6: ")
    assert "bank" in str(error.value.errors[0])
