"""The authentication rules every CRM adapter shares, and how a delivery's unused parts are
counted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.crm.auth import any_same_secret, configured_secret, fresh_signature, same_secret
from service.crm.base import BadPayload, InboundRequest, SourceConfig, Unauthorized
from service.crm.delivery import from_parts, from_single, json_body
from service.sla.types import LeadEvent, LeadSnapshot

NOW = datetime(2026, 11, 23, 14, 20, tzinfo=UTC)


def request(headers: dict[str, str], body: bytes = b"") -> InboundRequest:
    return InboundRequest(
        method="POST", path="/webhooks/x", query_string="", headers=headers, body=body,
        public_url="https://sla.example.com", received_at=NOW,
    )  # fmt: skip


def event(event_id: str) -> LeadEvent:
    return LeadEvent(
        event_id=event_id, type="lead.updated", occurred_at=NOW, lead=LeadSnapshot(id="L-1")
    )


def test_a_source_without_a_secret_refuses_with_the_setting_to_fill_in() -> None:
    assert configured_secret(SourceConfig(secret="s3cret"), "unused") == "s3cret"
    for secret in (None, ""):
        with pytest.raises(Unauthorized, match="set LEAD_SLA_WEBHOOK_SECRET_X"):
            configured_secret(SourceConfig(secret=secret), "set LEAD_SLA_WEBHOOK_SECRET_X")


def test_secrets_compare_as_text_or_bytes() -> None:
    assert same_secret("päss", "päss".encode())
    assert not same_secret(b"pass", "pas")
    assert any_same_secret(["wrong", "pass"], "pass")
    assert not any_same_secret(["wrong", "pass "], "pass")
    assert not any_same_secret([], "pass")


def signed(sent_at: datetime, *, unit: str = "ms") -> InboundRequest:
    stamp = sent_at.timestamp() * (1000 if unit == "ms" else 1)
    return request({"x-sig": " abc ", "x-ts": str(int(stamp))})


@pytest.mark.parametrize("offset", [timedelta(0), timedelta(minutes=-5), timedelta(minutes=5)])
def test_a_signature_is_good_within_the_tolerance_either_way(offset: timedelta) -> None:
    stamp = str(int((NOW + offset).timestamp() * 1000))
    assert fresh_signature(signed(NOW + offset), "x-sig", "x-ts", "ms", 300) == (" abc ", stamp)


@pytest.mark.parametrize("offset", [timedelta(minutes=-5, seconds=-1), timedelta(minutes=6)])
def test_an_older_or_later_signature_is_stale(offset: timedelta) -> None:
    with pytest.raises(Unauthorized, match=r"stale x-ts: 3\d\ds from our clock \(tolerance 300s\)"):
        fresh_signature(signed(NOW + offset, unit="s"), "x-sig", "x-ts", "s", 300)


def test_the_tolerance_is_the_configured_one() -> None:
    two_minutes_old = signed(NOW - timedelta(minutes=2), unit="s")
    assert fresh_signature(two_minutes_old, "x-sig", "x-ts", "s", 300)
    with pytest.raises(Unauthorized, match=r"120s from our clock \(tolerance 60s\)"):
        fresh_signature(two_minutes_old, "x-sig", "x-ts", "s", 60)


def test_missing_or_unreadable_signature_headers_are_refused() -> None:
    with pytest.raises(Unauthorized, match="missing x-sig or x-ts header"):
        fresh_signature(request({"x-sig": "abc"}), "x-sig", "x-ts", "s", 300)
    with pytest.raises(Unauthorized, match="x-ts is not epoch seconds"):
        fresh_signature(request({"x-sig": "abc", "x-ts": "yesterday"}), "x-sig", "x-ts", "s", 300)


def test_each_part_without_events_counts_once_as_ignored() -> None:
    parts = {"a": [event("a1"), event("a2")], "b": [], "c": [event("c1")], "d": []}
    delivery = from_parts(parts, lambda part: parts[part])
    assert [e.event_id for e in delivery.events] == ["a1", "a2", "c1"]
    assert delivery.ignored == 2
    assert (from_single([]).ignored, from_single([event("e")]).ignored) == (1, 0)


def test_a_body_that_is_not_json_is_a_bad_payload() -> None:
    assert json_body(request({}, b'[{"a": 1}]')) == [{"a": 1}]
    for body in (b"<xml/>", b"\xff\xfe{", b""):
        with pytest.raises(BadPayload, match="body is not JSON"):
            json_body(request({}, body))
