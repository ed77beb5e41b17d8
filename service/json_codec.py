"""JSON for what lead-sla stores: orjson, several times faster than the standard library, which
matters at hundreds of JSON values per delivery. Values orjson refuses (integers beyond 64 bits,
which a CRM's custom field can hold) fall back to the standard library."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import orjson


def dumps(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value)


def loads(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def dumps_rows(rows: Any) -> str:
    """Rows of values for PostgreSQL's ``json_to_recordset``: datetimes in RFC 3339 (naive ones
    taken as UTC, as the database driver takes them)."""
    try:
        return orjson.dumps(rows, option=orjson.OPT_NAIVE_UTC).decode()
    except orjson.JSONEncodeError:
        return json.dumps(rows, default=_isoformat)


def _isoformat(value: Any) -> str:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
