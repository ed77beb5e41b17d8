"""Standard Webhooks signatures (https://www.standardwebhooks.com): used to verify the generic
source and to sign every outbound webhook.

``webhook-signature: v1,<base64 HMAC-SHA256(secret, "<id>.<timestamp>.<body>")>``; the secret is
``whsec_<base64 key>``. Several space-separated signatures may be sent during key rotation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime

from service.crm.auth import same_secret
from service.crm.base import Unauthorized

SECRET_PREFIX = "whsec_"


def decode_secret(secret: str) -> bytes:
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a Standard Webhooks secret is 'whsec_' followed by base64") from exc
    if not key:
        raise ValueError("the webhook secret is empty")
    return key


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one message."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(decode_secret(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    now: datetime,
    tolerance_seconds: int = 300,
) -> str:
    """Check the signature and the timestamp window; return the message id.

    Raises ``Unauthorized`` with the reason (missing header, stale timestamp, no match).
    """
    message_id = headers.get("webhook-id")
    timestamp_text = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not (message_id and timestamp_text and signatures):
        raise Unauthorized(
            "missing Standard Webhooks headers (webhook-id, webhook-timestamp, webhook-signature)"
        )
    try:
        timestamp = int(timestamp_text)
    except ValueError:
        raise Unauthorized("webhook-timestamp is not a Unix timestamp in seconds") from None
    skew = now.timestamp() - timestamp
    if skew > tolerance_seconds:
        raise Unauthorized(
            f"webhook-timestamp is {int(skew)}s old (tolerance {tolerance_seconds}s)"
        )
    if -skew > tolerance_seconds:
        raise Unauthorized("webhook-timestamp is in the future beyond the tolerance")
    try:
        expected = sign(secret, message_id, timestamp, body).encode()
    except ValueError as exc:
        raise Unauthorized(f"the configured secret is unusable: {exc}") from None
    for candidate in signatures.split():
        if same_secret(candidate, expected):
            return message_id
    raise Unauthorized("no matching v1 signature")
