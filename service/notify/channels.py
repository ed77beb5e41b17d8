"""Delivering one outbox message over one channel. Called after commit, never inside a
transaction: a slow receiver must not hold database locks."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from service import __version__
from service.crm import signatures
from service.sla.policy import ChannelSpec

log = logging.getLogger("lead_sla.notifications")


@dataclass(frozen=True, slots=True)
class Delivery:
    ok: bool
    error: str | None = None
    retry_after_seconds: float | None = None
    permanent: bool = False  # no point retrying (e.g. 410 Gone)


@dataclass(frozen=True, slots=True)
class Message:
    key: str
    type: str
    recipient: str | None
    payload: dict[str, Any]


async def deliver(
    message: Message, channel: ChannelSpec, http: httpx.AsyncClient, now: datetime
) -> Delivery:
    if channel.type == "webhook":
        return await _deliver_webhook(message, channel, http, now)
    if channel.type == "log":
        log.info("%s", json.dumps({"recipient": message.recipient, **message.payload}))
        return Delivery(ok=True)
    return Delivery(ok=False, error=f"channel type {channel.type!r} cannot deliver", permanent=True)


async def _deliver_webhook(
    message: Message, channel: ChannelSpec, http: httpx.AsyncClient, now: datetime
) -> Delivery:
    """A Standard Webhooks POST; ``webhook-id`` is the idempotency key, so a receiver that sees
    the same id twice (we deliver at least once) can drop the second."""
    body = json.dumps(
        {**message.payload, "recipient": message.recipient}, separators=(",", ":")
    ).encode()
    timestamp = int(now.timestamp())
    headers = {
        "content-type": "application/json",
        "user-agent": f"lead-sla/{__version__}",
        "webhook-id": message.key,
        "webhook-timestamp": str(timestamp),
    }
    if channel.secret:
        headers["webhook-signature"] = signatures.sign(channel.secret, message.key, timestamp, body)
    try:
        response = await http.post(channel.url or "", content=body, headers=headers)
    except httpx.HTTPError as exc:
        return Delivery(ok=False, error=f"{type(exc).__name__}: {exc}")
    if 200 <= response.status_code < 300:
        return Delivery(ok=True)
    return Delivery(
        ok=False,
        error=f"HTTP {response.status_code}",
        retry_after_seconds=_retry_after(response.headers.get("retry-after"), now),
        permanent=response.status_code == 410,
    )


def _retry_after(value: str | None, now: datetime) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - now).total_seconds())
    except (TypeError, ValueError):
        return None
