"""RD Station webhooks: Marketing (conversions, opportunity marks) and CRM (deal changes).

Three body shapes arrive at the same endpoint and are told apart by their keys:

* Marketing, integration-screen format: ``{"leads": [ {lead profile} ]}`` for the "Conversão"
  and "Marcação de oportunidade" triggers. It names no event type and carries no event id, so each
  lead yields the occurrences its own timestamps prove: the last conversion
  (``last_conversion.created_at``), the opportunity mark (``last_marked_opportunity_date``) and
  the creation (``created_at``);
* Marketing, Webhooks API format: ``{"event_type": "WEBHOOK.CONVERTED" |
  "WEBHOOK.MARKED_OPPORTUNITY", "event_timestamp": ..., "contact": {...}}``;
* CRM: ``{"event_name": "crm_deal_created" | "crm_deal_updated" | "crm_deal_deleted",
  "document": {deal}}``. A deal is tracked as a lead of its own (id = deal id): the CRM payload
  does not carry the Marketing contact uuid.

Marketing signs nothing, so the endpoint URL carries the secret (``?token=``); the CRM can also
send it in a static header configured on the webhook. Event ids are derived from what identifies
the occurrence (lead uuid + kind + the occurrence's own timestamp), so a redelivery maps to the
same ids and a new conversion or a later mark does not.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from service.crm import mapping
from service.crm.auth import any_same_secret, configured_secret
from service.crm.base import (
    BadPayload,
    InboundRequest,
    ParsedDelivery,
    SourceConfig,
    SuccessResponse,
    Unauthorized,
)
from service.crm.delivery import from_parts
from service.sla.types import EventType, LeadEvent, LeadSnapshot, OwnerChange, StatusChange

SOURCE = "rdstation"

# The status_map key standing for "marked as opportunity" (RD's flag, not a lifecycle stage).
OPPORTUNITY = "opportunity"

# Lifecycle stages (Portuguese as the integration screen sends them, English as the API does),
# the opportunity flag, and CRM deal outcomes. RD's "oportunidade" is marketing handing the lead
# to sales, which most teams treat as the MQL moment, hence mql; override to ``opportunity`` or
# ``sal`` if your process means something else by it.
DEFAULT_STATUS_MAP: Mapping[str, str] = {
    "Lead": "new",
    "Lead Qualificado": "mql",
    "Qualified Lead": "mql",
    OPPORTUNITY: "mql",
    "Cliente": "customer",
    "Client": "customer",
    "won": "customer",
    "lost": "disqualified",
}

# Funnel position, to combine the stage with the opportunity flag: a lead marked as opportunity
# counts as opportunity unless its stage is already past it (customer).
_STAGE_RANK: Mapping[str, int] = {
    "lead": 0,
    "lead qualificado": 1,
    "qualified lead": 1,
    "cliente": 3,
    "client": 3,
}
_OPPORTUNITY_RANK = 2

DEFAULT_TOKEN_HEADER = "x-lead-sla-token"
_CRM_EVENTS = {"crm_deal_created", "crm_deal_updated", "crm_deal_deleted"}
_MARKETING_EVENTS = {"WEBHOOK.CONVERTED", "WEBHOOK.MARKED_OPPORTUNITY"}


class RDStationAdapter:
    source = SOURCE

    def authenticate(self, request: InboundRequest, config: SourceConfig) -> None:
        """The secret as ``?token=`` (Marketing), or in the CRM webhook's static auth header."""
        secret = configured_secret(
            config,
            "no secret is configured for source 'rdstation': set "
            "LEAD_SLA_WEBHOOK_SECRET_RDSTATION and put it in the webhook URL as ?token=",
        )
        header_name = str(config.options.get("token_header") or DEFAULT_TOKEN_HEADER).lower()
        candidates = list(parse_qs(request.query_string).get("token", []))
        for name in {header_name, "authorization"}:
            sent = request.header(name)
            if sent:
                candidates.append(_strip_scheme(sent))
        if not candidates:
            raise Unauthorized(
                f"no token: append ?token=<secret> to the webhook URL or send the {header_name} "
                "header"
            )
        if not any_same_secret(candidates, secret):
            raise Unauthorized("the token does not match LEAD_SLA_WEBHOOK_SECRET_RDSTATION")

    def parse(self, request: InboundRequest, config: SourceConfig) -> ParsedDelivery:
        try:
            body = json.loads(request.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadPayload(f"body is not valid JSON: {exc}") from None
        mapper = _Mapper(config.status_map)
        received_at = request.received_at.astimezone(UTC)
        if isinstance(body, dict) and isinstance(body.get("leads"), list):
            return _parse_leads(body["leads"], mapper)
        if isinstance(body, dict) and isinstance(body.get("contact"), dict):
            return _parse_contact_event(body, mapper)
        if isinstance(body, dict) and isinstance(body.get("document"), dict):
            return _parse_deal_event(body, mapper, received_at)
        return ParsedDelivery(events=[], ignored=1)

    def success_response(self, accepted: int, duplicates: int) -> SuccessResponse:
        return SuccessResponse()


class _Mapper:
    def __init__(self, overrides: Mapping[str, str]) -> None:
        self.overrides = overrides

    def status(self, value: str) -> str:
        return mapping.map_status(value, DEFAULT_STATUS_MAP, self.overrides)

    def funnel_status(self, stage: str | None, is_opportunity: bool) -> str | None:
        """The lead's status from its lifecycle stage and whether it is marked as opportunity."""
        rank = _STAGE_RANK.get(stage.strip().casefold(), 0) if stage else 0
        if is_opportunity and rank < _OPPORTUNITY_RANK:
            return self.status(OPPORTUNITY)
        return self.status(stage) if stage else None


# --- Marketing, integration-screen format ------------------------------------------------------


def _parse_leads(leads: list[Any], mapper: _Mapper) -> ParsedDelivery:
    return from_parts(
        leads, lambda lead: _lead_events(lead, mapper) if isinstance(lead, dict) else []
    )


def _lead_events(lead: Mapping[str, Any], mapper: _Mapper) -> list[LeadEvent]:
    lead_id = _str(lead.get("uuid")) or _str(lead.get("id"))
    if not lead_id:
        return []
    stage = _str(lead.get("lead_stage"))
    is_opportunity = _truthy(lead.get("opportunity"))
    marked_at = _timestamp(lead.get("last_marked_opportunity_date"))
    created_at = _timestamp(lead.get("created_at"))
    first = _dict(lead.get("first_conversion"))
    last = _dict(lead.get("last_conversion"))
    converted_at = _timestamp(last.get("created_at"))
    identifier = _str(_dict(last.get("content")).get("identificador"))

    attributes: dict[str, Any] = {}
    for name in ("company", "job_title", "city", "state", "tags", "fit_score", "website"):
        if lead.get(name) not in (None, "", []):
            attributes[name] = lead[name]
    if isinstance(lead.get("custom_fields"), Mapping):
        attributes.update({k: v for k, v in lead["custom_fields"].items() if v not in (None, "")})
    if stage:
        attributes["crm_status"] = stage
    if identifier:
        attributes["last_conversion"] = identifier
    origin = _dict(first.get("conversion_origin"))
    base = mapping.within_limits(
        LeadSnapshot(
            id=lead_id,
            email=_str(lead.get("email")),
            name=_str(lead.get("name")),
            source=_str(origin.get("source")) or _str(first.get("source")),
        )
    )
    full = mapping.within_limits(
        _with(
            base,
            owner=_str(lead.get("user")),
            score=mapping.parse_number(lead.get("interest")),
            attributes=attributes,
        )
    )

    events: list[LeadEvent] = []
    if created_at is not None:
        events.append(_event(f"{lead_id}:created", "lead.created", created_at, base))
    if is_opportunity and marked_at is not None:
        key = f"{lead_id}:{OPPORTUNITY}:{_iso(marked_at)}"
        marked = mapper.status(OPPORTUNITY)
        events.append(_status_event(key, marked_at, full, marked, OPPORTUNITY))
    if converted_at is not None:
        # The flag only applies to this conversion if the mark was not made after it.
        opportunity_then = is_opportunity and (marked_at is None or marked_at <= converted_at)
        funnel = mapper.funnel_status(stage, opportunity_then)
        key = f"{lead_id}:conversion:{identifier or ''}:{_iso(converted_at)}"
        events.append(_status_event(key, converted_at, full, funnel, stage))
    return events


# --- Marketing, Webhooks API format ------------------------------------------------------------


def _parse_contact_event(body: Mapping[str, Any], mapper: _Mapper) -> ParsedDelivery:
    event_type = _str(body.get("event_type"))
    contact: Mapping[str, Any] = body["contact"]
    lead_id = _str(contact.get("uuid"))
    occurred_at = _timestamp(body.get("event_timestamp")) or _timestamp(body.get("timestamp"))
    if event_type not in _MARKETING_EVENTS or not lead_id or occurred_at is None:
        return ParsedDelivery(events=[], ignored=1)
    funnel = _dict(contact.get("funnel"))
    stage = _str(funnel.get("lifecycle_stage"))
    attributes: dict[str, Any] = {
        name: value
        for name, value in contact.items()
        if name.startswith("cf_") and value not in (None, "", [])
    }
    for name in ("job_title", "city", "state", "tags", "website"):
        if contact.get(name) not in (None, "", []):
            attributes[name] = contact[name]
    company = _str(_dict(contact.get("company")).get("name"))
    if company:
        attributes["company"] = company
    if funnel.get("fit") is not None:
        attributes["fit_score"] = funnel["fit"]
    if stage:
        attributes["crm_status"] = stage
    identifier = _str(body.get("event_identifier"))
    if identifier and event_type == "WEBHOOK.CONVERTED":
        attributes["last_conversion"] = identifier
    snapshot = mapping.within_limits(
        LeadSnapshot(
            id=lead_id,
            owner=_str(funnel.get("contact_owner_email")),
            email=_str(contact.get("email")),
            name=_str(contact.get("name")),
            source=_str(funnel.get("origin")),
            score=mapping.parse_number(funnel.get("interest")),
            attributes=attributes,
        )
    )
    events: list[LeadEvent] = []
    created_at = _timestamp(contact.get("created_at"))
    if created_at is not None:
        base = LeadSnapshot(id=snapshot.id, email=snapshot.email, name=snapshot.name)
        events.append(_event(f"{lead_id}:created", "lead.created", created_at, base))
    if event_type == "WEBHOOK.MARKED_OPPORTUNITY":
        key = f"{lead_id}:{OPPORTUNITY}:{_iso(occurred_at)}"
        status = mapper.status(OPPORTUNITY)
        events.append(_status_event(key, occurred_at, snapshot, status, OPPORTUNITY))
    else:
        key = f"{lead_id}:conversion:{identifier or ''}:{_iso(occurred_at)}"
        derived = mapper.funnel_status(stage, _truthy(funnel.get("opportunity")))
        events.append(_status_event(key, occurred_at, snapshot, derived, stage))
    return ParsedDelivery(events=events)


# --- CRM deals ---------------------------------------------------------------------------------


def _parse_deal_event(
    body: Mapping[str, Any], mapper: _Mapper, received_at: datetime
) -> ParsedDelivery:
    event_name = _str(body.get("event_name")) or _str(body.get("event_type"))
    deal: Mapping[str, Any] = body["document"]
    deal_id = _str(deal.get("id"))
    if event_name not in _CRM_EVENTS or not deal_id:
        return ParsedDelivery(events=[], ignored=1)
    updated_at = _timestamp(deal.get("updated_at"))
    created_at = _timestamp(deal.get("created_at"))

    if event_name == "crm_deal_deleted":
        deleted_at = updated_at or received_at
        gone = LeadSnapshot(id=deal_id[: mapping.ID_MAX])
        return ParsedDelivery(
            events=[_event(f"deal:{deal_id}:deleted", "lead.deleted", deleted_at, gone)]
        )

    occurred_at = updated_at or created_at
    if occurred_at is None:
        return ParsedDelivery(events=[], ignored=1)
    user = _dict(deal.get("user"))
    stage = _dict(deal.get("deal_stage"))
    stage_name = _str(stage.get("name"))
    outcome = (_str(deal.get("status")) or "").casefold()
    raw_status = outcome if outcome in ("won", "lost") else stage_name
    status = mapper.status(raw_status) if raw_status else None
    reason = None
    if outcome == "lost":
        reason = _str(_dict(deal.get("deal_lost_reason")).get("name")) or "lost"

    attributes: dict[str, Any] = {"kind": "deal"}
    for name in ("amount_total", "amount_monthly", "amount_unique", "rating", "prediction_date"):
        if deal.get(name) is not None:
            attributes[name] = deal[name]
    pipeline = _str(_dict(deal.get("deal_pipeline")).get("name"))
    if pipeline:
        attributes["pipeline"] = pipeline
    if stage_name:
        attributes["crm_status"] = stage_name
    if outcome:
        attributes["deal_status"] = outcome
    campaign = _str(_dict(deal.get("campaign")).get("name"))
    if campaign:
        attributes["campaign"] = campaign
    for item in deal.get("deal_custom_fields") or []:
        if isinstance(item, Mapping) and item.get("value") not in (None, "", []):
            label = _str(_dict(item.get("custom_field")).get("label"))
            if label:
                attributes[label] = item["value"]
    snapshot = mapping.within_limits(
        LeadSnapshot(
            id=deal_id,
            status=status,
            owner=_str(user.get("email")) or _str(user.get("id")),
            email=_first_contact_email(deal),
            name=_str(deal.get("name")),
            source=_str(_dict(deal.get("deal_source")).get("name")),
            attributes=attributes,
        )
    )
    # created and updated fire together on creation; both describe the same deal state, so the
    # state-bearing ids leave the event name out and the two deliveries dedupe against each other.
    base = f"deal:{deal_id}:{_iso(occurred_at)}:{raw_status or ''}"
    events: list[LeadEvent] = []
    stateless = _with(snapshot, status=None)  # only the status event carries the status
    if event_name == "crm_deal_created" or (created_at is not None and created_at == updated_at):
        events.append(
            _event(f"deal:{deal_id}:created", "lead.created", created_at or occurred_at, stateless)
        )
    if status:
        events.append(
            _event(
                f"{base}:status",
                "lead.status_changed",
                occurred_at,
                snapshot,
                status=StatusChange(to=snapshot.status or status, reason=reason),
            )
        )
    if snapshot.owner:
        events.append(
            _event(
                f"{base}:owner",
                "lead.assigned",
                occurred_at,
                stateless,
                owner=OwnerChange(to=snapshot.owner),
            )
        )
    if not events:
        events.append(_event(f"{base}:updated", "lead.updated", occurred_at, snapshot))
    return ParsedDelivery(events=events)


def _first_contact_email(deal: Mapping[str, Any]) -> str | None:
    for contact in deal.get("contacts") or []:
        if not isinstance(contact, Mapping):
            continue
        for email in contact.get("emails") or []:
            address = _str(email.get("email")) if isinstance(email, Mapping) else _str(email)
            if address:
                return address
    return None


# --- helpers -----------------------------------------------------------------------------------


def _status_event(
    key: str, occurred_at: datetime, snapshot: LeadSnapshot, status: str | None, raw: str | None
) -> LeadEvent:
    if not status:
        return _event(key, "lead.updated", occurred_at, snapshot)
    clipped = mapping.clip(status, "status") or status
    reason = mapping.status_reason(clipped, raw)
    return _event(
        key,
        "lead.status_changed",
        occurred_at,
        _with(snapshot, status=clipped),
        status=StatusChange(to=clipped, reason=reason),
    )


def _event(
    event_id: str,
    type_: EventType,
    occurred_at: datetime,
    lead: LeadSnapshot,
    status: StatusChange | None = None,
    owner: OwnerChange | None = None,
) -> LeadEvent:
    return LeadEvent(
        event_id=mapping.bounded_event_id(event_id),
        type=type_,
        occurred_at=occurred_at,
        lead=lead,
        status=status,
        owner=owner,
    )


def _with(snapshot: LeadSnapshot, **changes: Any) -> LeadSnapshot:
    return replace(snapshot, **changes)


def _strip_scheme(value: str) -> str:
    scheme, _, rest = value.strip().partition(" ")
    if rest and scheme.lower() in ("bearer", "token"):
        return rest.strip()
    return value.strip()


def _timestamp(value: Any) -> datetime | None:
    """RD's ISO 8601 instants (sent with an offset) as aware UTC; ``None`` if unreadable."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return mapping.parse_timestamp(value)
    except ValueError:
        return None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return value is True


def _str(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    text = str(value).strip()
    return text or None


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


ADAPTER = RDStationAdapter()
