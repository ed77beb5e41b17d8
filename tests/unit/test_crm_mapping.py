"""The shared status-map and timestamp helpers of the CRM adapters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from service.crm.mapping import map_status, parse_timestamp

DEFAULTS = {"Qualified": "sql", "Bad Fit": "disqualified"}


def test_default_applies_and_unknown_values_are_kept_as_sent() -> None:
    assert map_status("Qualified", DEFAULTS, {}) == "sql"
    assert map_status("Interested Later", DEFAULTS, {}) == "Interested Later"


def test_configuration_wins_even_with_another_spelling() -> None:
    assert map_status("Qualified", DEFAULTS, {"Qualified": "sal"}) == "sal"
    assert map_status("Qualified", DEFAULTS, {"qualified": "sal"}) == "sal"


def test_case_insensitive_match_in_defaults() -> None:
    assert map_status("bad fit", DEFAULTS, {}) == "disqualified"


def test_exact_key_beats_another_spelling_in_the_same_map() -> None:
    assert map_status("OPEN", {}, {"open": "new", "OPEN": "sal"}) == "sal"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1795443600, datetime(2026, 11, 23, 14, 20, tzinfo=UTC)),
        (1795443600123, datetime(2026, 11, 23, 14, 20, 0, 123000, tzinfo=UTC)),
        (1795443600123456, datetime(2026, 11, 23, 14, 20, 0, 123456, tzinfo=UTC)),
        ("1795443600", datetime(2026, 11, 23, 14, 20, tzinfo=UTC)),
        ("2026-11-23T14:20:00Z", datetime(2026, 11, 23, 14, 20, tzinfo=UTC)),
        ("2026-11-23T11:20:00-03:00", datetime(2026, 11, 23, 14, 20, tzinfo=UTC)),
        ("2026-11-23T14:20:00.395000", datetime(2026, 11, 23, 14, 20, 0, 395000, tzinfo=UTC)),
        ("2026-11-23 14:20:00", datetime(2026, 11, 23, 14, 20, tzinfo=UTC)),
        (
            datetime(2026, 11, 23, 15, 20, tzinfo=timezone(timedelta(hours=1))),
            datetime(2026, 11, 23, 14, 20, tzinfo=UTC),
        ),
    ],
)
def test_parse_timestamp(value: object, expected: datetime) -> None:
    parsed = parse_timestamp(value)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


def test_explicit_epoch_unit() -> None:
    assert parse_timestamp(15000000, epoch_unit="ms") == datetime(1970, 1, 1, 4, 10, tzinfo=UTC)
    assert parse_timestamp("15000000", epoch_unit="s") == datetime(1970, 6, 23, 14, 40, tzinfo=UTC)


@pytest.mark.parametrize("value", [None, True, "", "yesterday", [], float("nan"), 10**30])
def test_parse_timestamp_rejects_what_is_not_an_instant(value: object) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(value)
