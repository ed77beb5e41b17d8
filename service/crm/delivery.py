"""Reading a CRM delivery: its JSON body, and how much of it was not used.

CRMs retry deliveries that are not answered with a 2xx, and some disable an endpoint that keeps
failing, so content a source does not track (another object, a property nobody maps) is accepted
and counted as ignored, never refused. The count is per part of the delivery: one notification,
one lead record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from service import json_codec
from service.crm.base import BadPayload, InboundRequest, ParsedDelivery
from service.sla.types import LeadEvent

Part = TypeVar("Part")


def json_body(request: InboundRequest) -> Any:
    """The decoded JSON body; ``BadPayload`` (400) when the body is not JSON at all."""
    try:
        return json_codec.loads(request.body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadPayload(f"body is not JSON: {exc}") from exc


def from_parts(
    parts: Iterable[Part], events_of: Callable[[Part], Sequence[LeadEvent]]
) -> ParsedDelivery:
    """The events of a delivery made of several parts; each part yielding none is one ignored."""
    events: list[LeadEvent] = []
    ignored = 0
    for part in parts:
        produced = events_of(part)
        if produced:
            events.extend(produced)
        else:
            ignored += 1
    return ParsedDelivery(events=events, ignored=ignored)


def from_single(events: list[LeadEvent]) -> ParsedDelivery:
    """The events of a delivery that is one notification: ignored once if it yields none."""
    return ParsedDelivery(events=events, ignored=0 if events else 1)
