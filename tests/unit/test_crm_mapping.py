"""The shared value helpers of the CRM adapters: status maps, timestamps, numbers, option values,
and fitting CRM text into the canonical lead."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from service.crm.mapping import (
    bounded_event_id,
    lead_for,
    map_status,
    option_list,
    option_map,
    parse_number,
    parse_timestamp,
    status_reason,
    within_limits,
)
from service.sla.types import LeadSnapshot

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


@pytest.mark.parametrize(
    ("value", "expected"),
    [(42, 42.0), ("12.5", 12.5), (" 7 ", 7.0), ("n/a", None), ("", None), (None, None),
     (True, None), ({"value": 1}, None), ([1], None), ("nan", None), ("-inf", None),
     (float("inf"), None), (10**400, None)],
)  # fmt: skip
def test_numbers_are_read_from_numbers_and_text_only(value: object, expected: float | None) -> None:
    assert parse_number(value) == expected


def test_snapshot_text_is_cut_to_what_the_stored_lead_holds() -> None:
    long = "x" * 400
    snapshot = within_limits(
        LeadSnapshot(id=long, status=long, owner=long, email=long, country=long, score=1.5)
    )
    assert (len(snapshot.id), len(snapshot.owner or "")) == (255, 255)
    assert (len(snapshot.status or ""), len(snapshot.country or "")) == (64, 64)
    assert len(snapshot.email or "") == 320
    assert (snapshot.name, snapshot.score) == (None, 1.5)


def test_only_the_status_event_carries_the_status() -> None:
    snapshot = LeadSnapshot(id="L-1", status="mql", owner="rep-7")
    assert lead_for("lead.status_changed", snapshot) == snapshot
    assert lead_for("lead.assigned", snapshot) == LeadSnapshot(id="L-1", owner="rep-7")


def test_the_crm_value_is_the_reason_only_for_closing_statuses_it_says_more_about() -> None:
    assert status_reason("disqualified", "Junk Lead") == "Junk Lead"
    assert status_reason("disqualified", "disqualified") is None
    assert status_reason("disqualified", None) is None
    assert status_reason("sal", "Contacted") is None


def test_long_event_ids_are_replaced_by_their_digest() -> None:
    assert bounded_event_id("k" * 255) == "k" * 255
    digest = bounded_event_id("k" * 256)
    assert digest.startswith("sha256:") and len(digest) == 71
    assert bounded_event_id("k" * 256) == digest


def test_option_values_are_read_as_lists_and_text_maps() -> None:
    assert option_list(None) == []
    assert option_list("Lead") == ["Lead"]
    assert option_list(("Lead", "Contact")) == ["Lead", "Contact"]
    assert option_list(5) == [5]
    assert option_map({1: "mql", "2": 3, "gone": None}) == {"1": "mql", "2": "3"}
    assert option_map(["not", "a", "map"]) == {}
