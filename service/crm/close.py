"""Close: webhook subscriptions, authenticated by the subscription's signature key.

Close posts one event-log entry per request, ``{"subscription_id": ..., "event": {...}}``, and
retries with backoff for 72 h. ``close-sig-hash`` is the hex HMAC-SHA256 of
``close-sig-timestamp`` + body, keyed with the hex-decoded ``signature_key`` that Close returns
once, when the subscription is created. The dedupe key is ``event.id``; a lead update that
yields several events suffixes it with ``:status``, ``:owner`` or ``:updated``.

Close consolidates quick successive updates of one object into one event that keeps the first
change's ``date_created``, so ``occurred_at`` is ``event.date_created``. Event timestamps come
without an offset and are UTC.

References: developer.close.com/topics/webhooks (payload, signature, delivery),
developer.close.com/api/resources/events/list-of-event-types (which action means what).
"""

from __future__ import annotations

import hashlib
import hmac
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
from service.crm.delivery import from_single, json_body
from service.crm.mapping import map_status, parse_timestamp
from service.sla.types import Activity, LeadEvent, LeadSnapshot, OwnerChange, StatusChange

SIGNATURE_HEADER = "close-sig-hash"
TIMESTAMP_HEADER = "close-sig-timestamp"

# Close's default lead statuses -> canonical. Organisations rename and add statuses; map them
# (by label or by `stat_...` id) in `status_map`.
LEAD_STATUSES: Mapping[str, str] = {
    "Potential": "new",
    "Qualified": "sql",
    "Bad Fit": "disqualified",
    "Customer": "customer",
}

# Opportunity `status_type` -> canonical status of the lead it belongs to.
OPPORTUNITY_STATUSES: Mapping[str, str] = {
    "active": "opportunity",
    "won": "customer",
    "lost": "disqualified",
}

# Call dispositions -> activity outcomes (others are kept as sent).
CALL_OUTCOMES: Mapping[str, str] = {
    "answered": "connected",
    "no-answer": "no_answer",
    "vm-answer": "voicemail",
    "vm-left": "voicemail",
}

# (object_type, action) pairs that are contact with a lead, and the activity kind they become.
# Emails and SMS count when actually sent (`created` is also fired for drafts and incoming
# messages), meetings when held, calls when placed (`completed` is not fired for logged calls).
ACTIVITY_ACTIONS: Mapping[tuple[str, str], str] = {
    ("activity.call", "created"): "call",
    ("activity.email", "sent"): "email",
    ("activity.sms", "sent"): "sms",
    ("activity.meeting", "completed"): "meeting",
    ("activity.whatsapp_message", "created"): "whatsapp",
}
_INBOUND = frozenset({"inbound", "incoming"})


class CloseAdapter:
    source = "close"

    def authenticate(self, request: InboundRequest, config: SourceConfig) -> None:
        secret = configured_secret(
            config,
            "no Close signature key configured: set LEAD_SLA_WEBHOOK_SECRET_CLOSE to the "
            "signature_key returned when the webhook subscription was created",
        )
        try:
            key = bytes.fromhex(secret.strip())
        except ValueError as exc:
            raise Unauthorized("LEAD_SLA_WEBHOOK_SECRET_CLOSE is not a hex signature_key") from exc
        signature, timestamp = fresh_signature(
            request, SIGNATURE_HEADER, TIMESTAMP_HEADER, "s", config.tolerance_seconds
        )
        expected = hmac.new(key, timestamp.encode() + request.body, hashlib.sha256).hexdigest()
        if not same_secret(signature.strip().lower(), expected):
            raise Unauthorized(f"{SIGNATURE_HEADER} does not match the signature key")

    def parse(self, request: InboundRequest, config: SourceConfig) -> ParsedDelivery:
        body = json_body(request)
        if not isinstance(body, Mapping) or not isinstance(body.get("event"), Mapping):
            raise BadPayload("a Close webhook is a JSON object with an 'event' object")
        return from_single(_events(body["event"], config))

    def success_response(self, accepted: int, duplicates: int) -> SuccessResponse:
        return SuccessResponse()


def _events(event: Mapping[str, Any], config: SourceConfig) -> list[LeadEvent]:
    event_id = event.get("id")
    object_type = event.get("object_type")
    action = event.get("action")
    data = event.get("data")
    data = data if isinstance(data, Mapping) else {}
    previous = event.get("previous_data")
    previous = previous if isinstance(previous, Mapping) else {}
    lead_id = event.get("lead_id") or data.get("lead_id")
    if object_type == "lead":
        lead_id = lead_id or event.get("object_id") or data.get("id")
    if not event_id or not lead_id or not isinstance(object_type, str):
        return []
    try:
        occurred_at = parse_timestamp(event.get("date_created"))
    except ValueError:
        return []
    options = config.options
    self_originated = _self_originated(event, options)
    changed = event.get("changed_fields")
    changed_fields = set(changed) if isinstance(changed, list) else set(previous)

    def make(suffix: str | None, **kwargs: Any) -> LeadEvent:
        return LeadEvent(
            event_id=str(event_id) if suffix is None else f"{event_id}:{suffix}",
            occurred_at=occurred_at,
            self_originated=self_originated,
            **kwargs,
        )

    lead = LeadSnapshot(id=str(lead_id))
    status_from_activity = options.get("status_from") == "activity"
    owner_field = _owner_field(options)

    if object_type == "lead":
        if action == "created":
            snapshot = LeadSnapshot(
                id=lead.id,
                status=_lead_status(data.get("status_id"), data.get("status_label"), config),
                owner=_user(data.get(owner_field)) if owner_field else None,
                name=_text(data.get("display_name")) or _text(data.get("name")),
            )
            return [make(None, type="lead.created", lead=snapshot)]
        if action == "deleted":
            return [make(None, type="lead.deleted", lead=lead)]
        if action != "updated":
            return []
        events: list[LeadEvent] = []
        if not status_from_activity and changed_fields & {"status_id", "status_label"}:
            to = _lead_status(data.get("status_id"), data.get("status_label"), config)
            from_ = _lead_status(previous.get("status_id"), previous.get("status_label"), config)
            if to is not None and to != from_:
                status = StatusChange(to=to, from_=from_)
                events.append(make("status", type="lead.status_changed", lead=lead, status=status))
        if owner_field and owner_field in changed_fields:
            owner = OwnerChange(
                to=_user(data.get(owner_field)), from_=_user(previous.get(owner_field))
            )
            events.append(make("owner", type="lead.assigned", lead=lead, owner=owner))
        if changed_fields & {"display_name", "name"}:
            name = _text(data.get("display_name")) or _text(data.get("name"))
            if name:
                snapshot = LeadSnapshot(id=lead.id, name=name)
                events.append(make("updated", type="lead.updated", lead=snapshot))
        return events

    if object_type == "opportunity" and action in ("created", "updated"):
        if action == "updated" and not changed_fields & {
            "status_id",
            "status_label",
            "status_type",
        }:
            return []
        to = _opportunity_status(data, config)
        from_ = _opportunity_status(previous, config) if action == "updated" else None
        if to is None or to == from_:
            return []
        status = StatusChange(to=to, from_=from_)
        return [make(None, type="lead.status_changed", lead=lead, status=status)]

    if object_type == "activity.lead_status_change" and action == "created":
        if not status_from_activity:
            return []  # the same change also arrives as `lead` `updated`
        to = _lead_status(data.get("new_status_id"), data.get("new_status_label"), config)
        if to is None:
            return []
        from_ = _lead_status(data.get("old_status_id"), data.get("old_status_label"), config)
        status = StatusChange(to=to, from_=from_)
        return [make(None, type="lead.status_changed", lead=lead, status=status)]

    kind = ACTIVITY_ACTIONS.get((object_type, str(action)))
    if kind is None or str(data.get("direction", "")).lower() in _INBOUND:
        return []
    outcome: str | None = None
    if kind == "call" and data.get("disposition"):
        disposition = str(data["disposition"])
        outcome = CALL_OUTCOMES.get(disposition, disposition)
    elif kind == "meeting":
        outcome = "completed"
    activity = Activity(kind=kind, outcome=outcome, by=_user(data.get("user_id")))
    return [make(None, type="lead.activity", lead=lead, activity=activity)]


def _lead_status(status_id: Any, label: Any, config: SourceConfig) -> str | None:
    """A lead status by id (``stat_...``, stable across renames) or label; an unmapped status
    is kept as its label."""
    if status_id and str(status_id) in config.status_map:
        return config.status_map[str(status_id)]
    if label:
        return map_status(str(label), LEAD_STATUSES, config.status_map)
    return str(status_id) if status_id else None


def _opportunity_status(data: Mapping[str, Any], config: SourceConfig) -> str | None:
    """An opportunity's status by id or label from ``status_map``, else by its status type."""
    for key in (data.get("status_id"), data.get("status_label")):
        if key and str(key) in config.status_map:
            return config.status_map[str(key)]
    status_type = data.get("status_type")
    if status_type:
        return map_status(str(status_type), OPPORTUNITY_STATUSES, config.status_map)
    label = data.get("status_label")
    return str(label) if label else None


def _owner_field(options: Mapping[str, Any]) -> str | None:
    """Close has no lead owner field; teams keep one in a User custom field
    (``options.owner_field``: ``cf_...`` or ``custom.cf_...``)."""
    field = options.get("owner_field")
    if not field:
        return None
    field = str(field)
    return field if field.startswith("custom.") else f"custom.{field}"


def _self_originated(event: Mapping[str, Any], options: Mapping[str, Any]) -> bool:
    """A change made with lead-sla's own Close API key or OAuth app (the event records which)."""
    for option in ("api_key_id", "oauth_client_id"):
        configured = options.get(option)
        if configured and event.get(option) == configured:
            return True
    return False


def _user(value: Any) -> str | None:
    return str(value) if value else None


def _text(value: Any) -> str | None:
    return str(value) if isinstance(value, str) and value.strip() else None


ADAPTER = CloseAdapter()
