"""The rules every CRM source applies when a sender proves who it is.

Each CRM has its own credential (a request signature, HTTP Basic credentials, a shared token, an
organization id), but what surrounds it is the same everywhere: a source without a configured
secret refuses every delivery instead of accepting unauthenticated ones, a signed request is only
good for a few minutes, and secrets are compared in constant time so that how long a refusal
takes tells nothing about how close a guess was.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from service.crm.base import InboundRequest, SourceConfig, Unauthorized
from service.crm.mapping import EpochUnit, parse_timestamp

_EPOCH_UNIT_NAMES: dict[str, str] = {
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
}


def configured_secret(config: SourceConfig, missing: str) -> str:
    """The source's secret; ``Unauthorized(missing)`` when none is configured.

    Without a secret nothing can be verified, so the source refuses everything rather than
    trusting anyone. ``missing`` tells the operator which setting to fill in and with what.
    """
    if not config.secret:
        raise Unauthorized(missing)
    return config.secret


def same_secret(presented: str | bytes, expected: str | bytes) -> bool:
    """Whether two secrets (or signatures) are equal, compared in constant time."""
    left = presented.encode() if isinstance(presented, str) else presented
    right = expected.encode() if isinstance(expected, str) else expected
    return hmac.compare_digest(left, right)


def any_same_secret(candidates: Iterable[str], expected: str) -> bool:
    """Whether any of the presented candidates is the secret.

    Every candidate is compared, so the time taken does not depend on which one matched.
    """
    matches = [same_secret(candidate, expected) for candidate in candidates]
    return any(matches)


def fresh_signature(
    request: InboundRequest,
    signature_header: str,
    timestamp_header: str,
    epoch_unit: EpochUnit,
    tolerance_seconds: int,
) -> tuple[str, str]:
    """The signature and timestamp headers of a signed request, as sent.

    Raises ``Unauthorized`` when either header is missing, when the timestamp is not an epoch
    number in ``epoch_unit``, or when it is more than ``tolerance_seconds``
    (``LEAD_SLA_WEBHOOK_TOLERANCE_SECONDS``) from the moment the request was received: an old
    signature, however valid, may be a replay. The bound applies either way (HubSpot documents
    rejecting timestamps older than 5 minutes), so a timestamp from the future cannot stretch
    the replay window.
    """
    signature = request.header(signature_header)
    timestamp = request.header(timestamp_header)
    if not signature or not timestamp:
        raise Unauthorized(f"missing {signature_header} or {timestamp_header} header")
    try:
        sent_at = parse_timestamp(timestamp, epoch_unit=epoch_unit)
    except ValueError as exc:
        unit = _EPOCH_UNIT_NAMES[epoch_unit]
        raise Unauthorized(f"{timestamp_header} is not epoch {unit}") from exc
    skew = abs((request.received_at - sent_at).total_seconds())
    if skew > tolerance_seconds:
        raise Unauthorized(
            f"stale {timestamp_header}: {int(skew)}s from our clock "
            f"(tolerance {tolerance_seconds}s)"
        )
    return signature, timestamp
