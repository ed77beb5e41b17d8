"""Small helpers every CRM adapter needs: status maps with overrides, CRM timestamps and numbers,
option values, and fitting CRM text into the canonical lead.

Kept deliberately general so each adapter (HubSpot, Pipedrive, Close, Salesforce, RD Station,
Zoho, ...) maps its own values the same way and every instant lands as an aware UTC datetime.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Literal

from service.sla.types import EventType, LeadSnapshot

EpochUnit = Literal["s", "ms", "us", "ns"]

_UNIT_DIVISOR: dict[str, float] = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}

# What the stored lead holds (the column sizes in ``service/models.py``): lead ids and event ids
# up to 255 characters, text fields up to 255 unless listed here.
ID_MAX = 255
FIELD_LIMITS: Mapping[str, int] = {"status": 64, "priority": 64, "country": 64, "email": 320}

# Canonical statuses that end or park a lead. For these the CRM's own value ("Junk Lead", a
# lost reason) says why, so it travels along as the change's reason.
REASON_STATUSES = frozenset({"disqualified", "recycled", "unreachable"})


def map_status(value: str, defaults: Mapping[str, str], overrides: Mapping[str, str]) -> str:
    """The canonical status for a CRM status value.

    Configuration wins over the adapter's defaults, even when only its spelling differs. In
    each map an exact key match is tried first, then a case-insensitive one (CRM labels are
    user-edited text: "Bad Fit" and "bad fit" are the same status to an operator). A value
    neither map knows is returned exactly as the CRM sent it: it is still a real status that
    policies and reports can name.
    """
    folded = value.casefold()
    for table in (overrides, defaults):
        if value in table:
            return table[value]
        for key, canonical in table.items():
            if key.casefold() == folded:
                return canonical
    return value


def parse_timestamp(value: object, *, epoch_unit: EpochUnit | None = None) -> datetime:
    """An aware UTC datetime from what CRMs send for instants.

    Accepts epoch numbers (or strings of digits) and ISO 8601 text with or without an offset.
    Without ``epoch_unit`` an epoch number's unit is inferred from its size: anything below
    1e11 is seconds (up to the year 5138), below 1e14 milliseconds, below 1e17 microseconds,
    else nanoseconds. ISO text without an offset, and naive datetimes, are taken as UTC, which is
    what CRM APIs that omit the offset mean. Raises ``ValueError`` for anything else.
    """
    if isinstance(value, bool) or value is None:
        raise ValueError(f"not a timestamp: {value!r}")
    if isinstance(value, datetime):
        return _as_utc(value)
    if isinstance(value, int | float):
        return _from_epoch(float(value), epoch_unit)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("empty timestamp")
        try:
            number = float(text)
        except ValueError:
            pass
        else:
            return _from_epoch(number, epoch_unit)
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError as exc:
            raise ValueError(f"not an ISO 8601 timestamp: {value!r}") from exc
        return _as_utc(parsed)
    raise ValueError(f"not a timestamp: {value!r}")


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _from_epoch(number: float, unit: EpochUnit | None) -> datetime:
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError("not a finite epoch timestamp")
    if unit is None:
        magnitude = abs(number)
        if magnitude < 1e11:
            unit = "s"
        elif magnitude < 1e14:
            unit = "ms"
        elif magnitude < 1e17:
            unit = "us"
        else:
            unit = "ns"
    try:
        return datetime.fromtimestamp(number / _UNIT_DIVISOR[unit], tz=UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise ValueError(f"epoch timestamp out of range: {number!r}") from exc


def parse_number(value: object) -> float | None:
    """A CRM number (a number or its text) as a float; ``None`` when absent or not a number
    (``"nan"`` and ``"inf"`` included: no score or amount means either)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def clip(value: str | None, field: str) -> str | None:
    """``value`` cut to the length the canonical ``field`` holds.

    CRM text fields are often longer than ours; a truncated value is better than a delivery
    refused for one long field.
    """
    if value is None:
        return None
    return value[: FIELD_LIMITS.get(field, 255)]


def within_limits(snapshot: LeadSnapshot) -> LeadSnapshot:
    """The snapshot with its id and every text field cut to what the stored lead holds."""
    return replace(
        snapshot,
        id=snapshot.id[:ID_MAX],
        status=clip(snapshot.status, "status"),
        owner=clip(snapshot.owner, "owner"),
        team=clip(snapshot.team, "team"),
        email=clip(snapshot.email, "email"),
        name=clip(snapshot.name, "name"),
        source=clip(snapshot.source, "source"),
        segment=clip(snapshot.segment, "segment"),
        priority=clip(snapshot.priority, "priority"),
        country=clip(snapshot.country, "country"),
    )


def lead_for(event_type: EventType, snapshot: LeadSnapshot) -> LeadSnapshot:
    """The snapshot one of several events from the same record carries.

    Only the status event carries the status, so the status change is attributed to it and not
    to the assignment or update that came with it.
    """
    return snapshot if event_type == "lead.status_changed" else replace(snapshot, status=None)


def status_reason(status: str, raw: str | None) -> str | None:
    """The CRM's own value as the reason of a change into ``status``, where it says more.

    Only for the statuses in ``REASON_STATUSES``, and only when it is not the canonical status
    itself: policies match on the canonical status, reports show why.
    """
    return raw if status in REASON_STATUSES and raw and raw != status else None


def bounded_event_id(key: str) -> str:
    """Event ids are at most 255 characters; a longer derived key is replaced by its digest."""
    if len(key) <= ID_MAX:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def option_list(value: Any) -> list[Any]:
    """A source option that takes one value or several, as a list (a lone string is one)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Iterable):
        return list(value)
    return [value]


def option_map(value: Any) -> dict[str, str]:
    """A source option that maps names to names, as text (YAML reads ids as numbers); entries
    without a value are dropped."""
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in value.items() if v is not None}
