"""Opaque cursors: base64 of a small JSON object, so their shape can change without breaking
clients that treat them as tokens."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from fastapi import HTTPException

T = TypeVar("T")


def encode_cursor(position: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> dict[str, Any] | None:
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded))
    except (binascii.Error, ValueError):
        raise HTTPException(400, "invalid cursor") from None
    if not isinstance(value, dict):
        raise HTTPException(400, "invalid cursor")
    return value


def cursor_value(position: dict[str, Any], key: str, parse: Callable[[Any], T]) -> T:
    """One field of a decoded cursor; a cursor that was tampered with is a 400, not a 500."""
    try:
        return parse(position[key])
    except (KeyError, TypeError, ValueError):
        raise HTTPException(400, "invalid cursor") from None


def aware_datetime(value: Any) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("naive datetime")
    return parsed
