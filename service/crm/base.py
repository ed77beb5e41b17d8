"""What every inbound source implements: authenticate the sender, turn the exact bytes into events.

The webhook route (``service/api/webhooks.py``) owns everything else — body size limit, dedupe,
persistence, the answer — so each adapter stays a pure function of the request it is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from service.sla.types import LeadEvent


@dataclass(frozen=True, slots=True)
class InboundRequest:
    """An HTTP delivery as received. Header names are lower-case."""

    method: str
    path: str  # e.g. "/webhooks/hubspot"
    query_string: str  # raw, undecoded, without "?"
    headers: Mapping[str, str]
    body: bytes
    public_url: str  # LEAD_SLA_PUBLIC_URL without trailing slash, e.g. "https://sla.example.com"
    received_at: datetime  # aware UTC, from the service clock

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True, slots=True)
class FieldError:
    index: int
    field: str
    message: str


@dataclass(frozen=True, slots=True)
class ParsedDelivery:
    """The canonical events of one delivery, plus how many parts of it were not used."""

    events: list[LeadEvent]
    ignored: int = 0  # notifications/properties accepted but not mapped to an event


@dataclass(frozen=True, slots=True)
class SuccessResponse:
    """What a sender expects back on success. ``None`` body: the standard JSON answer."""

    body: bytes | None = None
    media_type: str = "application/json"


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """Per-source configuration: the secret and overrides from the policy file's ``sources``."""

    secret: str | None
    status_map: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    # How old (or how far ahead) a signed timestamp may be: LEAD_SLA_WEBHOOK_TOLERANCE_SECONDS.
    tolerance_seconds: int = 300


class Unauthorized(Exception):
    """Authentication failed: 401, nothing stored."""


class BadPayload(Exception):
    """The body is not parseable at all: 400."""


class InvalidEvents(Exception):
    """Well-formed but invalid events: 422 with per-event errors, nothing of the batch stored."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__(f"{len(errors)} invalid event(s)")
        self.errors = errors


class Adapter(Protocol):
    source: str

    def authenticate(self, request: InboundRequest, config: SourceConfig) -> None:
        """Raise ``Unauthorized`` unless the sender proved who it is (with a message saying why)."""

    def parse(self, request: InboundRequest, config: SourceConfig) -> ParsedDelivery:
        """Turn the body into canonical events; raise ``BadPayload`` or ``InvalidEvents``."""

    def success_response(self, accepted: int, duplicates: int) -> SuccessResponse:
        """The body the sender expects on success."""
