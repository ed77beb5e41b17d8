"""HubSpot: the Webhooks API (contact subscriptions), authenticated by signature v3.

HubSpot posts a JSON array of up to 100 notifications, in no particular order, and retries a
whole batch (10 times over 24 h) when the answer is not a 2xx. Every notification carries only
the new value of one property, so ``StatusChange.from_`` stays ``None``: the previous status is
the one already derived from stored events.

References: developers.hubspot.com/docs/api/webhooks (payloads, retries),
developers.hubspot.com/docs/apps/legacy-apps/authentication/validating-requests (signature v3).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any

from service.crm.auth import configured_secret, fresh_signature, same_secret
from service.crm.base import (
    BadPayload,
    InboundRequest,
    ParsedDelivery,
    SourceConfig,
    SuccessResponse,
    Unauthorized,
)
from service.crm.delivery import from_parts, json_body
from service.crm.mapping import map_status, parse_timestamp
from service.sla.types import (
    Activity,
    EventType,
    LeadEvent,
    LeadSnapshot,
    OwnerChange,
    StatusChange,
)

SIGNATURE_HEADER = "X-HubSpot-Signature-v3"
TIMESTAMP_HEADER = "X-HubSpot-Request-Timestamp"

# `lifecyclestage` internal values -> canonical statuses. "other" is deliberately unmapped and
# kept as "other": HubSpot uses it for "none of the above", which is not an SLA state.
LIFECYCLE_STAGES: Mapping[str, str] = {
    "subscriber": "new",
    "lead": "new",
    "marketingqualifiedlead": "mql",
    "salesqualifiedlead": "sql",
    "opportunity": "opportunity",
    "customer": "customer",
    "evangelist": "customer",
}

# `hs_lead_status` internal values -> canonical statuses. OPEN ("open to be worked", nobody has
# reached the lead yet) maps to "new" rather than "sal" so that opening a lead cannot stop a
# first-touch clock; IN_PROGRESS is the rep accepting and working it.
LEAD_STATUSES: Mapping[str, str] = {
    "NEW": "new",
    "OPEN": "new",
    "IN_PROGRESS": "sal",
    "OPEN_DEAL": "opportunity",
    "UNQUALIFIED": "disqualified",
    "BAD_TIMING": "recycled",
}

# `hs_lead_status` values that record contact effort, not a disposition. A `status_map` entry
# for one of these turns it back into a status change.
LEAD_STATUS_ACTIVITIES: Mapping[str, Activity] = {
    "ATTEMPTED_TO_CONTACT": Activity(kind="attempt"),
    "CONNECTED": Activity(kind="call", outcome="connected"),
}

# Contact properties that are lead fields. `lastname` is kept in attributes only: HubSpot sends
# one property per notification, and a last name alone would overwrite the name.
FIELD_PROPERTIES: Mapping[str, str] = {
    "email": "email",
    "firstname": "name",
    "hs_analytics_source": "source",
    "country": "country",
}
ATTRIBUTE_PROPERTIES = frozenset({"lastname"})

OWNER_PROPERTY = "hubspot_owner_id"
CONTACT_OBJECT_TYPE_ID = "0-1"  # generic `object.*` subscriptions name contacts this way

# HubSpot's documented list: these encoded characters are decoded in the request URI before it
# is signed. Anything else (e.g. %20) stays encoded.
_DECODED_IN_URI: Mapping[str, str] = {
    "3A": ":",
    "2F": "/",
    "3F": "?",
    "40": "@",
    "21": "!",
    "24": "$",
    "27": "'",
    "28": "(",
    "29": ")",
    "2A": "*",
    "2C": ",",
    "3B": ";",
}
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")


def signed_uri(request: InboundRequest) -> str:
    """The URI as HubSpot signs it: public URL, path and query, with HubSpot's decodings."""
    uri = request.public_url + request.path
    if request.query_string:
        uri += "?" + request.query_string

    def decode(match: re.Match[str]) -> str:
        return _DECODED_IN_URI.get(match.group(1).upper(), match.group(0))

    return _PERCENT.sub(decode, uri)


def signature_v3(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """base64(HMAC-SHA256(client secret, method + URI + body + timestamp))."""
    message = method.encode() + uri.encode() + body + timestamp.encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class HubSpotAdapter:
    source = "hubspot"

    def authenticate(self, request: InboundRequest, config: SourceConfig) -> None:
        secret = configured_secret(
            config,
            "no HubSpot secret configured: set LEAD_SLA_WEBHOOK_SECRET_HUBSPOT to the app's "
            "client secret",
        )
        signature, timestamp = fresh_signature(
            request, SIGNATURE_HEADER, TIMESTAMP_HEADER, "ms", config.tolerance_seconds
        )
        expected = signature_v3(
            secret, request.method.upper(), signed_uri(request), request.body, timestamp
        )
        if not same_secret(signature.strip(), expected):
            raise Unauthorized(
                f"{SIGNATURE_HEADER} does not match (check the client secret and that "
                "LEAD_SLA_PUBLIC_URL is the URL HubSpot calls)"
            )

    def parse(self, request: InboundRequest, config: SourceConfig) -> ParsedDelivery:
        body = json_body(request)
        if not isinstance(body, list):
            raise BadPayload("HubSpot sends a JSON array of notifications")
        return from_parts(body, lambda notification: _events(notification, config))

    def success_response(self, accepted: int, duplicates: int) -> SuccessResponse:
        return SuccessResponse()


def _events(notification: Any, config: SourceConfig) -> list[LeadEvent]:
    """The one event a notification becomes, if any: a notification changes one property."""
    event = _event(notification, config) if isinstance(notification, Mapping) else None
    return [] if event is None else [event]


def _event(notification: Mapping[str, Any], config: SourceConfig) -> LeadEvent | None:
    """One notification as one event, or ``None`` when nothing in it is used."""
    kind = notification.get("subscriptionType") or notification.get("eventType")
    if not isinstance(kind, str) or "." not in kind:
        return None
    obj, _, change = kind.partition(".")
    if obj == "object":
        if str(notification.get("objectTypeId")) != CONTACT_OBJECT_TYPE_ID:
            return None
    elif obj != "contact":
        return None
    portal_id = notification.get("portalId")
    event_id = notification.get("eventId")
    object_id = notification.get("objectId")
    if portal_id is None or event_id is None or object_id is None:
        return None
    try:
        occurred_at = parse_timestamp(notification.get("occurredAt"), epoch_unit="ms")
    except ValueError:
        return None

    lead_id = str(object_id)
    fields: dict[str, Any] = {}
    event_type: EventType
    status: StatusChange | None = None
    owner: OwnerChange | None = None
    activity: Activity | None = None
    if change == "creation":
        event_type = "lead.created"
    elif change in ("deletion", "privacyDeletion"):
        event_type = "lead.deleted"
    elif change == "propertyChange":
        name = notification.get("propertyName")
        raw = notification.get("propertyValue")
        value = "" if raw is None else str(raw)
        if not isinstance(name, str):
            return None
        if name == "lifecyclestage" and value:
            event_type = "lead.status_changed"
            status = StatusChange(to=map_status(value, LIFECYCLE_STAGES, config.status_map))
        elif name == "hs_lead_status" and value:
            if value not in config.status_map and value in LEAD_STATUS_ACTIVITIES:
                event_type = "lead.activity"
                activity = LEAD_STATUS_ACTIVITIES[value]
            else:
                event_type = "lead.status_changed"
                status = StatusChange(to=map_status(value, LEAD_STATUSES, config.status_map))
        elif name == OWNER_PROPERTY:
            event_type = "lead.assigned"
            owner = OwnerChange(to=value or None)
        elif name in FIELD_PROPERTIES and value:
            event_type = "lead.updated"
            fields[FIELD_PROPERTIES[name]] = value
        elif name in ATTRIBUTE_PROPERTIES and value:
            event_type = "lead.updated"
        else:
            return None
        # The raw property travels along so policies can match on HubSpot's own value.
        fields["attributes"] = {name: value}
    else:
        return None

    return LeadEvent(
        # eventId alone is documented as "not guaranteed to be unique"; the subscription and
        # object pin it down. None of these change between retries (attemptNumber does).
        event_id=f"{portal_id}:{event_id}:{notification.get('subscriptionId')}:{object_id}",
        type=event_type,
        occurred_at=occurred_at,
        lead=LeadSnapshot(id=lead_id, **fields),
        status=status,
        owner=owner,
        activity=activity,
        self_originated=_self_originated(notification, config.options),
    )


def _self_originated(notification: Mapping[str, Any], options: Mapping[str, Any]) -> bool:
    """A change lead-sla made through its own HubSpot app (``options.app_id``)."""
    app_id = options.get("app_id")
    if app_id is None:
        return False
    change_source = str(options.get("change_source", "INTEGRATION"))
    return notification.get("changeSource") == change_source and str(
        notification.get("sourceId")
    ) == str(app_id)


ADAPTER = HubSpotAdapter()
