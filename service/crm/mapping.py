"""Small helpers every CRM adapter needs: status maps with overrides, and CRM timestamps.

Kept deliberately general so each adapter (HubSpot, Pipedrive, Close, Salesforce, RD Station,
Zoho, ...) maps its own values the same way and every instant lands as an aware UTC datetime.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Literal

EpochUnit = Literal["s", "ms", "us", "ns"]

_UNIT_DIVISOR: dict[str, float] = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}


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
