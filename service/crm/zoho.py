"""Zoho CRM workflow-rule webhooks: one lead record per request, in a shape the admin designs.

The admin configures the webhook (Setup > Automation > Actions > Webhooks) with the URL, POST,
and either a form-encoded body (Form-Data, ``application/x-www-form-urlencoded``) or a raw JSON
body, filled with merge fields under parameter names of their choosing. Hence:

* fields are read through ``options.field_map`` (canonical name -> parameter name), falling back
  to Zoho's API field names (``Lead_Status``, ``Modified_Time``, ``Owner``...) so a record posted
  by a Deluge function in API shape works too; parameters appended to the URL count as fields;
* the sender proves itself with a shared key the admin adds as a custom parameter or header:
  ``?token=``, the ``zoho-webhook-token`` header, or a ``token`` body field;
* Zoho sends no event id, so the occurrence is identified by lead id + modified time + status:
  a redelivery (or a second rule firing on the same edit) maps to the same ids, and a later edit
  does not;
* ``occurred_at`` is the record's modified time; Zoho gives it with an offset
  (``2026-11-23T14:05:00-03:00``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, parse_qsl
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from service.crm import mapping
from service.crm.auth import any_same_secret, configured_secret
from service.crm.base import (
    BadPayload,
    FieldError,
    InboundRequest,
    InvalidEvents,
    ParsedDelivery,
    SourceConfig,
    SuccessResponse,
    Unauthorized,
)
from service.sla.types import (
    Activity,
    EventType,
    LeadEvent,
    LeadSnapshot,
    OwnerChange,
    StatusChange,
)

SOURCE = "zoho"
TOKEN_PARAM = "token"
TOKEN_HEADER = "zoho-webhook-token"

# Canonical field -> the parameter name the admin gives it in the webhook. Entries in
# ``options.field_map`` replace these one by one.
DEFAULT_FIELD_MAP: Mapping[str, str] = {
    "id": "lead_id",
    "status": "lead_status",
    "owner": "owner_id",
    "email": "email",
    "modified_time": "modified_time",
    "created_time": "created_time",
    "modified_by": "modified_by",
    "event": "event",
    "module": "module",
    "name": "name",
    "first_name": "first_name",
    "last_name": "last_name",
    "source": "lead_source",
    "country": "country",
    "team": "team",
    "segment": "segment",
    "priority": "priority",
    "score": "score",
}

# Zoho's API names for the same fields, read when the mapped parameter is absent.
API_FIELD_NAMES: Mapping[str, tuple[str, ...]] = {
    "id": ("id", "Id", "LEADID"),
    "status": ("Lead_Status",),
    "owner": ("Owner",),
    "email": ("Email",),
    "modified_time": ("Modified_Time",),
    "created_time": ("Created_Time",),
    "modified_by": ("Modified_By",),
    "name": ("Full_Name",),
    "first_name": ("First_Name",),
    "last_name": ("Last_Name",),
    "source": ("Lead_Source",),
    "country": ("Country",),
}

# The standard Lead_Status picklist. "Not Contacted" is the lead handed to sales and waiting for
# a first touch, which is what the default first-touch policy starts on (mql). Attempting or
# making contact means sales is working the lead (sal) and is also recorded as a call (see
# DEFAULT_ACTIVITY_STATUSES). "Pre-Qualified" comes after contact in Zoho's process, so it maps
# past mql: mapping it to mql would re-enter the start status and open a new first-touch cycle.
# "Contact in Future" hands the lead back to nurture.
DEFAULT_STATUS_MAP: Mapping[str, str] = {
    "Not Contacted": "mql",
    "Attempted to Contact": "sal",
    "Contacted": "sal",
    "Contact in Future": "recycled",
    "Pre-Qualified": "sql",
    "Not Qualified": "disqualified",
    "Junk Lead": "disqualified",
    "Lost Lead": "disqualified",
}

# Lead_Status values that are themselves a contact attempt. ``options.activity_statuses``
# replaces this table (``{}`` turns it off).
DEFAULT_ACTIVITY_STATUSES: Mapping[str, Mapping[str, str]] = {
    "Attempted to Contact": {"kind": "call", "outcome": "no_answer"},
    "Contacted": {"kind": "call", "outcome": "connected"},
}

_NO_VALUE = frozenset({"", "-none-", "null", "none"})
_DELETE_EVENTS = frozenset({"delete", "deleted", "lead.deleted", "lead_deleted"})
_CREATE_EVENTS = frozenset({"create", "created", "lead.created", "lead_created"})


class ZohoAdapter:
    source = SOURCE

    def authenticate(self, request: InboundRequest, config: SourceConfig) -> None:
        secret = configured_secret(
            config,
            "no secret is configured for source 'zoho': set LEAD_SLA_WEBHOOK_SECRET_ZOHO and "
            "send it from the webhook as the 'token' parameter or the zoho-webhook-token header",
        )
        candidates = list(parse_qs(request.query_string).get(TOKEN_PARAM, []))
        header = request.header(TOKEN_HEADER)
        if header:
            candidates.append(header.strip())
        try:
            records = _records(request)
        except BadPayload:
            records = []  # the token may still be in the URL or header; parse reports the body
        for record in records:
            value = record.get(TOKEN_PARAM) if isinstance(record, Mapping) else None
            if isinstance(value, str) and value:
                candidates.append(value)
        if not candidates:
            raise Unauthorized(
                "no token: add a 'token' parameter (URL or body) or a zoho-webhook-token header "
                "to the Zoho webhook"
            )
        if not any_same_secret(candidates, secret):
            raise Unauthorized("the token does not match LEAD_SLA_WEBHOOK_SECRET_ZOHO")

    def parse(self, request: InboundRequest, config: SourceConfig) -> ParsedDelivery:
        records = _records(request)
        reader = _Reader(config)
        events: list[LeadEvent] = []
        errors: list[FieldError] = []
        ignored = 0
        for index, record in enumerate(records):
            if not isinstance(record, Mapping):
                ignored += 1
                continue
            try:
                produced = reader.events(record)
            except _RecordError as exc:
                errors.append(FieldError(index=index, field=exc.field, message=exc.message))
                continue
            if produced is None:
                ignored += 1
            else:
                events.extend(produced)
        if errors:
            raise InvalidEvents(errors)
        return ParsedDelivery(events=events, ignored=ignored)

    def success_response(self, accepted: int, duplicates: int) -> SuccessResponse:
        return SuccessResponse()


class _RecordError(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class _Reader:
    def __init__(self, config: SourceConfig) -> None:
        options = config.options
        self.field_map = {**DEFAULT_FIELD_MAP, **mapping.option_map(options.get("field_map"))}
        self.status_overrides = config.status_map
        activity_statuses = options.get("activity_statuses")
        self.activity_statuses: Mapping[str, Any] = (
            activity_statuses
            if isinstance(activity_statuses, Mapping)
            else DEFAULT_ACTIVITY_STATUSES
        )
        self_users = mapping.option_list(options.get("self_user_ids"))
        self.self_users = {str(v).strip() for v in self_users}
        modules = mapping.option_list(options.get("modules"))
        self.modules = {str(m).casefold() for m in modules} or {"leads"}
        self.timezone = _zone(options.get("timezone"))
        self.datetime_format = options.get("datetime_format")

    def value(self, record: Mapping[str, Any], canonical: str) -> str | None:
        name = self.field_map.get(canonical)
        candidates = ([name] if name else []) + list(API_FIELD_NAMES.get(canonical, ()))
        for key in candidates:
            if key in record:
                text = _text(record[key])
                if text is not None:
                    return text
        return None

    def timestamp(self, record: Mapping[str, Any], canonical: str) -> datetime | None:
        text = self.value(record, canonical)
        if text is None:
            return None
        parsed = _timestamp(text, self.timezone, self.datetime_format)
        if parsed is None:
            raise _RecordError(
                self.field_map.get(canonical, canonical),
                f"unreadable date-time {text!r}: expected ISO 8601 such as "
                "2026-11-23T14:05:00-03:00 (or set options.datetime_format)",
            )
        return parsed

    def events(self, record: Mapping[str, Any]) -> list[LeadEvent] | None:
        """The record's events, or ``None`` when it is content this source does not track."""
        module = self.value(record, "module")
        if module is not None and module.casefold() not in self.modules:
            return None
        lead_id = self.value(record, "id")
        if not lead_id:
            raise _RecordError(
                self.field_map["id"], "missing: map the lead id (${Leads.Lead Id}) to this name"
            )
        modified = self.timestamp(record, "modified_time")
        if modified is None:
            raise _RecordError(
                self.field_map["modified_time"],
                "missing: map ${Leads.Modified Time}; it orders events and identifies redeliveries",
            )
        created = self.timestamp(record, "created_time")
        event_name = (self.value(record, "event") or "").casefold()
        raw_status = self.value(record, "status")
        status = (
            mapping.map_status(raw_status, DEFAULT_STATUS_MAP, self.status_overrides)
            if raw_status
            else None
        )
        owner = self.value(record, "owner")
        modified_by = self.value(record, "modified_by")

        consumed = {self.field_map[c] for c in self.field_map} | {TOKEN_PARAM}
        for names in API_FIELD_NAMES.values():
            consumed.update(names)
        attributes: dict[str, Any] = {
            key: value
            for key, value in record.items()
            if key not in consumed and _text(value) is not None
        }
        if raw_status:
            attributes["crm_status"] = raw_status
        first_last = " ".join(
            part
            for part in (self.value(record, "first_name"), self.value(record, "last_name"))
            if part
        )
        snapshot = mapping.within_limits(
            LeadSnapshot(
                id=lead_id,
                status=status,
                owner=owner,
                team=self.value(record, "team"),
                email=self.value(record, "email"),
                name=self.value(record, "name") or first_last or None,
                source=self.value(record, "source"),
                segment=self.value(record, "segment"),
                priority=self.value(record, "priority"),
                score=mapping.parse_number(self.value(record, "score")),
                country=self.value(record, "country"),
                attributes=attributes,
            )
        )
        self_originated = modified_by is not None and modified_by in self.self_users
        base = f"{lead_id}:{_iso(modified)}:{raw_status or ''}"

        def event(event_id: str, type_: EventType, **parts: Any) -> LeadEvent:
            return LeadEvent(
                event_id=mapping.bounded_event_id(event_id),
                type=type_,
                occurred_at=modified,
                lead=mapping.lead_for(type_, snapshot),
                self_originated=self_originated,
                **parts,
            )

        if event_name in _DELETE_EVENTS:
            return [event(f"{lead_id}:deleted", "lead.deleted")]
        out: list[LeadEvent] = []
        if event_name in _CREATE_EVENTS or (created is not None and created == modified):
            out.append(event(f"{lead_id}:created", "lead.created"))
        if status and snapshot.status:
            reason = mapping.status_reason(status, raw_status)
            out.append(
                event(
                    f"{base}:status",
                    "lead.status_changed",
                    status=StatusChange(to=snapshot.status, reason=reason),
                )
            )
        if snapshot.owner:
            out.append(
                event(f"{base}:owner", "lead.assigned", owner=OwnerChange(to=snapshot.owner))
            )
        activity = self.activity(raw_status, snapshot.owner)
        if activity is not None:
            out.append(event(f"{base}:status:activity", "lead.activity", activity=activity))
        if not out:
            out.append(event(f"{base}:updated", "lead.updated"))
        return out

    def activity(self, raw_status: str | None, owner: str | None) -> Activity | None:
        if not raw_status:
            return None
        folded = raw_status.strip().casefold()
        for key, spec in self.activity_statuses.items():
            if str(key).strip().casefold() == folded and isinstance(spec, Mapping):
                kind = _text(spec.get("kind")) or "call"
                return Activity(kind=kind, outcome=_text(spec.get("outcome")), by=owner)
        return None


def _records(request: InboundRequest) -> list[Any]:
    """The lead records of the request: URL parameters merged under each body record."""
    query = dict(parse_qsl(request.query_string, keep_blank_values=True))
    body = request.body.strip()
    content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
    if not body:
        return [query] if query else []
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadPayload("body is not UTF-8 text") from None
    if content_type == "application/json" or (
        content_type != "application/x-www-form-urlencoded" and text[:1] in ("{", "[")
    ):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadPayload(f"body is not valid JSON: {exc}") from None
        if isinstance(data, Mapping) and isinstance(data.get("data"), list):
            data = data["data"]
        if isinstance(data, Mapping):
            return [{**query, **data}]
        if isinstance(data, list):
            return [{**query, **item} if isinstance(item, Mapping) else item for item in data]
        raise BadPayload("JSON body must be an object or a list of objects")
    try:
        form = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise BadPayload("body is neither JSON nor form-encoded (name=value&...)") from None
    return [{**query, **dict(form)}]


def _text(value: Any) -> str | None:
    """A field's value as text; Zoho lookups (``{"id": ..., "name": ...}``) give their id."""
    if isinstance(value, Mapping):
        value = value.get("id") or value.get("email") or value.get("name")
    if value is None or isinstance(value, (list, dict, bool)):
        return None
    text = str(value).strip()
    return None if text.casefold() in _NO_VALUE else text


def _timestamp(text: str, zone: ZoneInfo | None, fmt: Any) -> datetime | None:
    """ISO 8601 or epoch seconds/milliseconds; a time without offset is read in ``zone``."""
    stripped = text.strip()
    local: datetime | None = None
    try:
        local = datetime.fromisoformat(stripped)
    except ValueError:
        if isinstance(fmt, str) and fmt:
            try:
                local = datetime.strptime(stripped, fmt)
            except ValueError:
                return None
    if local is not None and local.tzinfo is None and zone is not None:
        return local.replace(tzinfo=zone).astimezone(UTC)
    try:
        return mapping.parse_timestamp(local if local is not None else stripped)
    except ValueError:
        return None


def _zone(value: Any) -> ZoneInfo | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


ADAPTER = ZohoAdapter()
