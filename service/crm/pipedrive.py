"""Pipedrive: general webhooks (v2, and the older v1 format), authenticated by HTTP Basic auth.

Pipedrive posts one notification per request and sends the Basic credentials configured on the
webhook (``http_auth_user``/``http_auth_password``). It retries three times (after 3, 30 and 150
s) and bans a webhook for 30 minutes after 10 failed first attempts, so anything we do not use
is counted as ignored and answered 2xx.

Lead identity, so that activities land on the lead they concern:

* a Pipedrive lead (Leads Inbox) is the lead UUID, e.g. ``b1810230-6c0d-11ed-9826-a53d0eb706a5``;
* a person is ``person:<id>``; a deal is ``deal:<id>``;
* an activity belongs to the first of its ``lead_id``, ``deal_id``, ``person_id`` that is set
  and tracked (order configurable with ``options.activity_link_order``).

Event ids (the dedupe key): v2 ``meta.id`` (the event id, unchanged across retries), with a
``:status``/``:owner``/``:updated`` suffix when one change yields several events; v1 has no event
id, so ``v1:<object>:<id>:<action>:<timestamp_micro>``. A done activity is
``activity:<id>:done`` in both, so it counts once however often it is ticked.

References: pipedrive.readme.io/docs/guide-for-webhooks-v2,
pipedrive.readme.io/docs/webhooks-v2-migration-guide (v2 examples),
pipedrive.readme.io/docs/guide-for-webhooks (v1).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from service.crm.auth import configured_secret, same_secret
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

TRACKED_ENTITIES: tuple[str, ...] = ("lead", "person", "deal")
DEFAULT_ACTIVITY_LINK_ORDER: tuple[str, ...] = ("lead", "deal", "person")

# Deal `status` -> canonical. An open deal's status comes from its stage (`options.stage_map`).
DEAL_STATUSES: Mapping[str, str] = {"won": "customer", "lost": "disqualified"}

# Activity `type` (the activity type's key) -> activity kind. Other types (task, deadline,
# lunch, ...) are not contact with the lead; custom types are added with
# `options.activity_types`, e.g. {"whatsapp_chat": "whatsapp"}.
ACTIVITY_TYPES: Mapping[str, str] = {"call": "call", "email": "email", "meeting": "meeting"}

_V1_ACTIONS: Mapping[str, str] = {
    "added": "create",
    "updated": "change",
    "merged": "change",
    "deleted": "delete",
}


@dataclass(frozen=True, slots=True)
class _Notification:
    """A v1 or v2 webhook in one shape."""

    key: str  # event id base
    action: str  # create | change | delete
    entity: str
    occurred_at: datetime
    data: Mapping[str, Any]  # the object now (the last state for deletes)
    previous: Mapping[str, Any]  # v2: changed fields only; v1: the whole previous object
    self_originated: bool


class PipedriveAdapter:
    source = "pipedrive"

    def authenticate(self, request: InboundRequest, config: SourceConfig) -> None:
        secret = configured_secret(
            config,
            "no Pipedrive credentials configured: set LEAD_SLA_WEBHOOK_SECRET_PIPEDRIVE to "
            "'user:password', the HTTP auth user and password of the Pipedrive webhook",
        )
        if ":" not in secret:
            raise Unauthorized(
                "LEAD_SLA_WEBHOOK_SECRET_PIPEDRIVE must be 'user:password' (the webhook's HTTP "
                "auth user and password)"
            )
        header = request.header("Authorization") or ""
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded.strip():
            raise Unauthorized(
                "missing HTTP Basic credentials: set the HTTP auth user and password on the "
                "Pipedrive webhook"
            )
        try:
            presented = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise Unauthorized("malformed HTTP Basic credentials") from exc
        if not same_secret(presented, secret):
            raise Unauthorized("HTTP Basic credentials do not match")

    def parse(self, request: InboundRequest, config: SourceConfig) -> ParsedDelivery:
        body = json_body(request)
        if not isinstance(body, Mapping) or not isinstance(body.get("meta"), Mapping):
            raise BadPayload("a Pipedrive webhook is a JSON object with a 'meta' block")
        notification = _normalise(body, config.options)
        return from_single(_events(notification, config) if notification is not None else [])

    def success_response(self, accepted: int, duplicates: int) -> SuccessResponse:
        return SuccessResponse()


def _normalise(body: Mapping[str, Any], options: Mapping[str, Any]) -> _Notification | None:
    meta: Mapping[str, Any] = body["meta"]
    if "current" in body or "event" in body or "object" in meta:  # webhooks v1
        entity = meta.get("object")
        if not isinstance(entity, str) and isinstance(body.get("event"), str):
            entity = body["event"].partition(".")[2]
        action = _V1_ACTIONS.get(str(meta.get("action")))
        if not isinstance(entity, str) or action is None or meta.get("id") is None:
            return None
        stamp = meta.get("timestamp_micro")
        try:
            if stamp is not None:
                occurred_at = parse_timestamp(stamp, epoch_unit="us")
            else:
                stamp = meta.get("timestamp")
                occurred_at = parse_timestamp(stamp, epoch_unit="s")
        except ValueError:
            return None
        key = f"v1:{entity}:{meta['id']}:{meta.get('action')}:{stamp}"
        current, previous = body.get("current"), body.get("previous")
    else:  # webhooks v2
        entity, action, event_id = meta.get("entity"), meta.get("action"), meta.get("id")
        if not isinstance(entity, str) or not isinstance(action, str) or event_id is None:
            return None
        try:
            occurred_at = parse_timestamp(meta.get("timestamp"))
        except ValueError:
            return None
        key = str(event_id)
        current, previous = body.get("data"), body.get("previous")
    data = current if isinstance(current, Mapping) else None
    prev = previous if isinstance(previous, Mapping) else {}
    if action == "delete" and data is None:
        data = prev  # v2 and v1 send the last state in `previous`
    if data is None:
        return None
    return _Notification(
        key=key,
        action=action,
        entity=entity,
        occurred_at=occurred_at,
        data=data,
        previous=prev,
        self_originated=_self_originated(meta, options),
    )


def _self_originated(meta: Mapping[str, Any], options: Mapping[str, Any]) -> bool:
    """A change made through the API by lead-sla's own Pipedrive user (``options.api_user_id``)."""
    api_user_id = options.get("api_user_id")
    if api_user_id is None:
        return False
    return meta.get("change_source") == "api" and str(meta.get("user_id")) == str(api_user_id)


def _events(n: _Notification, config: SourceConfig) -> list[LeadEvent]:
    options = config.options
    tracked = _tracked(options)
    if n.entity == "activity":
        done = _activity_event(n, config, tracked)
        return [done] if done is not None else []
    if n.entity not in tracked:
        return []
    lead_id = _lead_id(n.entity, n.data.get("id"))
    if lead_id is None:
        return []

    def make(suffix: str | None, **kwargs: Any) -> LeadEvent:
        return LeadEvent(
            event_id=n.key if suffix is None else f"{n.key}:{suffix}",
            occurred_at=n.occurred_at,
            self_originated=n.self_originated,
            **kwargs,
        )

    if n.action == "create":
        snapshot = LeadSnapshot(
            id=lead_id,
            status=_status_of(n.entity, n.data, config),
            owner=_owner_of(n.data),
            name=_name_of(n.entity, n.data),
            email=_email_of(n.data),
        )
        return [make(None, type="lead.created", lead=snapshot)]
    if n.action == "delete":
        return [make(None, type="lead.deleted", lead=LeadSnapshot(id=lead_id))]
    if n.action != "change":
        return []

    events: list[LeadEvent] = []
    status = _status_change(n, config)
    if status is not None:
        events.append(
            make("status", type="lead.status_changed", lead=LeadSnapshot(id=lead_id), status=status)
        )
    owner_field = _owner_field(n.data, n.previous)
    if owner_field is not None and _changed(n, owner_field):
        events.append(
            make(
                "owner",
                type="lead.assigned",
                lead=LeadSnapshot(id=lead_id),
                owner=OwnerChange(
                    to=_user_id(n.data.get(owner_field)),
                    from_=_user_id(n.previous.get(owner_field)),
                ),
            )
        )
    fields: dict[str, Any] = {}
    if n.entity == "person" and _changed(n, "name"):
        fields["name"] = _name_of(n.entity, n.data)
    if n.entity == "person" and (_changed(n, "emails") or _changed(n, "email")):
        fields["email"] = _email_of(n.data)
    fields = {name: value for name, value in fields.items() if value}
    if fields:
        events.append(make("updated", type="lead.updated", lead=LeadSnapshot(id=lead_id, **fields)))
    return events


def _tracked(options: Mapping[str, Any]) -> tuple[str, ...]:
    entities = options.get("entities")
    if isinstance(entities, Iterable) and not isinstance(entities, str):
        return tuple(str(e) for e in entities if str(e) in TRACKED_ENTITIES)
    return TRACKED_ENTITIES


def _lead_id(entity: str, object_id: Any) -> str | None:
    if object_id is None or object_id == "":
        return None
    if entity == "lead":
        return str(object_id)
    return f"{entity}:{object_id}"


def _changed(n: _Notification, field: str) -> bool:
    """Whether ``field`` changed: v2 lists only changed fields in ``previous``; v1 sends the whole
    previous object, so values are compared."""
    return field in n.previous and n.previous.get(field) != n.data.get(field)


# --- statuses -------------------------------------------------------------------------------


def _status_of(entity: str, data: Mapping[str, Any], config: SourceConfig) -> str | None:
    """The canonical status an object's current data implies, if any."""
    if entity == "deal":
        deal_status = data.get("status")
        if isinstance(deal_status, str) and deal_status in ("won", "lost"):
            return map_status(deal_status, DEAL_STATUSES, config.status_map)
        return _stage_status(data.get("stage_id"), config)
    return _label_status(_labels(data), config)


def _stage_status(stage_id: Any, config: SourceConfig) -> str | None:
    """A stage's status through ``options.stage_map`` (then ``status_map``); an unmapped stage
    is kept as its id."""
    if stage_id is None or stage_id == "":
        return None
    value = str(stage_id)
    return map_status(value, _str_map(config.options.get("stage_map")), config.status_map)


def _label_status(labels: Sequence[str], config: SourceConfig) -> str | None:
    """The first label that ``options.label_map`` (or ``status_map``) names. Labels are tags, so
    an unmapped label is not a status."""
    label_map = _str_map(config.options.get("label_map"))
    for label in labels:
        for table in (label_map, config.status_map):
            if label in table:
                return table[label]
    return None


def _labels(data: Mapping[str, Any]) -> list[str]:
    raw = data.get("label_ids")
    if raw is None:
        raw = data.get("label")
    if raw is None or raw == "":
        return []
    if isinstance(raw, list):
        return [str(item) for item in raw if item is not None]
    return [part.strip() for part in str(raw).split(",") if part.strip()]


def _status_change(n: _Notification, config: SourceConfig) -> StatusChange | None:
    """The status change a `change` notification carries; a move between two stages (or labels)
    that map to the same status is not one."""
    change = _raw_status_change(n, config)
    if change is None or change.to == change.from_:
        return None
    return change


def _raw_status_change(n: _Notification, config: SourceConfig) -> StatusChange | None:
    if n.entity == "deal":
        if _changed(n, "status") and n.data.get("status") in ("won", "lost", "open"):
            to = _status_of("deal", n.data, config)
            previous = {**n.data, **n.previous}
            reason = n.data.get("lost_reason") if n.data.get("status") == "lost" else None
            if to is None:
                return None
            return StatusChange(
                to=to,
                from_=_status_of("deal", previous, config),
                reason=str(reason) if reason else None,
            )
        if _changed(n, "stage_id") and n.data.get("status") in (None, "open"):
            to = _stage_status(n.data.get("stage_id"), config)
            if to is None:
                return None
            return StatusChange(to=to, from_=_stage_status(n.previous.get("stage_id"), config))
        return None
    label_field = "label_ids" if "label_ids" in n.data or "label_ids" in n.previous else "label"
    if not _changed(n, label_field):
        return None
    before = set(_labels(n.previous))
    added = [label for label in _labels(n.data) if label not in before]
    to = _label_status(added, config) or _label_status(_labels(n.data), config)
    if to is None:
        return None
    return StatusChange(to=to, from_=_label_status(_labels(n.previous), config))


# --- owners and fields ----------------------------------------------------------------------


def _owner_field(data: Mapping[str, Any], previous: Mapping[str, Any]) -> str | None:
    """Deals, persons and leads carry the owner in `owner_id`; v1 deals in `user_id`."""
    for field in ("owner_id", "user_id"):
        if field in data or field in previous:
            return field
    return None


def _owner_of(data: Mapping[str, Any]) -> str | None:
    field = _owner_field(data, {})
    return _user_id(data.get(field)) if field else None


def _user_id(value: Any) -> str | None:
    if isinstance(value, Mapping):  # v1 may send {"id": 1, "name": ..., "value": 1}
        value = value.get("id", value.get("value"))
    if value is None or value == "":
        return None
    return str(value)


def _name_of(entity: str, data: Mapping[str, Any]) -> str | None:
    value = data.get("name") if entity == "person" else data.get("person_name")
    return str(value) if value else None


def _email_of(data: Mapping[str, Any]) -> str | None:
    """The primary address of a person (`emails` in v2, `email` in v1)."""
    raw = data.get("emails", data.get("email"))
    if isinstance(raw, str):
        return raw or None
    if not isinstance(raw, list):
        return None
    entries = [entry for entry in raw if isinstance(entry, Mapping) and entry.get("value")]
    entries.sort(key=lambda entry: not entry.get("primary"))
    return str(entries[0]["value"]) if entries else None


# --- activities -----------------------------------------------------------------------------


def _activity_event(
    n: _Notification, config: SourceConfig, tracked: Sequence[str]
) -> LeadEvent | None:
    """A done call/email/meeting on the lead it concerns.

    Only done activities count: a scheduled call is a plan, not contact, and counting it would
    let a clock be stopped by putting something in the calendar. An activity counts when it is
    created as done or when it is marked done.
    """
    done = n.data.get("done") is True
    if n.action == "create":
        counts = done
    elif n.action == "change":
        counts = done and "done" in n.previous and n.previous.get("done") is not True
    else:
        counts = False
    activity_id = n.data.get("id")
    if not counts or activity_id is None:
        return None
    kinds = {**ACTIVITY_TYPES, **_str_map(config.options.get("activity_types"))}
    kind = kinds.get(str(n.data.get("type")))
    if not kind:
        return None
    lead_id = _activity_lead(n.data, config.options, tracked)
    if lead_id is None:
        return None
    by = _user_id(n.data.get("owner_id", n.data.get("user_id")))
    return LeadEvent(
        event_id=f"activity:{activity_id}:done",
        type="lead.activity",
        occurred_at=n.occurred_at,
        lead=LeadSnapshot(id=lead_id),
        activity=Activity(kind=kind, by=by),
        self_originated=n.self_originated,
    )


def _activity_lead(
    data: Mapping[str, Any], options: Mapping[str, Any], tracked: Sequence[str]
) -> str | None:
    order = options.get("activity_link_order")
    if not isinstance(order, Iterable) or isinstance(order, str):
        order = DEFAULT_ACTIVITY_LINK_ORDER
    for entity in order:
        entity = str(entity)
        if entity not in tracked:
            continue
        lead_id = _lead_id(entity, data.get(f"{entity}_id"))
        if lead_id is not None:
            return lead_id
    return None


def _str_map(value: Any) -> dict[str, str]:
    """An option map with string keys (YAML turns stage ids into ints)."""
    if not isinstance(value, Mapping):
        return {}
    return {str(key): str(canonical) for key, canonical in value.items()}


ADAPTER = PipedriveAdapter()
