"""Salesforce Outbound Messages: SOAP 1.1 ``notifications`` sent by a workflow rule or flow.

Salesforce posts up to 100 ``Notification`` elements per message, each carrying the record's
*current* field values (not what changed), and retries until it gets the SOAP ``Ack``. So:

* the sender is recognised by ``OrganizationId`` (the only credential an outbound message has),
  optionally strengthened with a ``?token=`` the operator appends to the endpoint URL;
* the XML is parsed with ``defusedxml`` with DTDs forbidden, so entity bombs and external entities
  are rejected instead of expanded;
* each notification becomes ``lead.status_changed`` (``to`` = mapped ``Status``, no ``from``) and
  ``lead.assigned`` (``OwnerId``). Re-sending an unchanged status never restarts a clock because
  the engine compares it with the stored state; a real change into a start status does;
* the notification ``Id`` is the dedupe key (Salesforce documents at-least-once delivery and tells
  listeners to track it), suffixed per emitted event;
* ``occurred_at`` is ``LastModifiedDate``: deliveries are retried out of order, so arrival order
  means nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeElementTree

from service.crm import mapping
from service.crm.auth import any_same_secret, configured_secret, same_secret
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

SOURCE = "salesforce"
OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"
SOAP_ENV_NS = "http://schemas.xmlsoap.org/soap/envelope/"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"

# The standard Lead.Status picklist. "Open - Not Contacted" is the lead handed to sales and waiting
# for a first touch, which is what the default first-touch policy starts on (mql); "Working -
# Contacted" is sales working it (accepted); conversion creates the opportunity/contact (sql).
DEFAULT_STATUS_MAP: Mapping[str, str] = {
    "Open - Not Contacted": "mql",
    "Working - Contacted": "sal",
    "Closed - Converted": "sql",
    "Closed - Not Converted": "disqualified",
}

# Lead.Rating feeds the canonical ``priority`` that per-priority targets key on.
DEFAULT_PRIORITY_MAP: Mapping[str, str] = {"Hot": "high", "Warm": "medium", "Cold": "low"}

# Canonical lead field -> Salesforce field. ``options.field_map`` overrides or adds entries
# (e.g. ``team: Sales_Team__c``, ``segment: Industry``, ``score: Lead_Score__c``).
DEFAULT_FIELD_MAP: Mapping[str, str] = {
    "status": "Status",
    "owner": "OwnerId",
    "email": "Email",
    "source": "LeadSource",
    "country": "Country",
    "priority": "Rating",
}

# Fields read for identity, naming and ordering; the rest of the record lands in ``attributes``.
_BOOKKEEPING = frozenset(
    {
        "Id",
        "Name",
        "FirstName",
        "LastName",
        "CreatedDate",
        "LastModifiedDate",
        "SystemModstamp",
        "IsDeleted",
    }
)

ACK = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
    b"<soapenv:Body>"
    b'<notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">'
    b"<Ack>true</Ack>"
    b"</notificationsResponse>"
    b"</soapenv:Body>"
    b"</soapenv:Envelope>"
)


class SalesforceAdapter:
    source = SOURCE

    def authenticate(self, request: InboundRequest, config: SourceConfig) -> None:
        """``OrganizationId`` must be the configured org id (15 or 18 characters).

        An unparseable body is a ``BadPayload`` even here: the org id cannot be read without
        parsing, and a malformed or hostile document must never reach the XML expander.
        """
        secret = configured_secret(
            config,
            "no secret is configured for source 'salesforce': set "
            "LEAD_SLA_WEBHOOK_SECRET_SALESFORCE to your Salesforce organization id",
        )
        expected = _org_key(secret)
        if expected is None:
            raise Unauthorized(
                "LEAD_SLA_WEBHOOK_SECRET_SALESFORCE is not a 15- or 18-character "
                "Salesforce organization id"
            )
        url_token = config.options.get("url_token")
        if url_token:
            sent = parse_qs(request.query_string).get("token", [])
            if not any_same_secret(sent, str(url_token)):
                raise Unauthorized("missing or wrong ?token= on the outbound message endpoint URL")
        notifications = _notifications(request.body)
        org_id = _text(notifications, "OrganizationId")
        if not org_id:
            raise Unauthorized("the outbound message carries no OrganizationId")
        received = _org_key(org_id)
        if received is None or not same_secret(received, expected):
            raise Unauthorized("OrganizationId does not match the configured organization id")

    def parse(self, request: InboundRequest, config: SourceConfig) -> ParsedDelivery:
        notifications = _notifications(request.body)
        options = config.options
        field_map = {**DEFAULT_FIELD_MAP, **mapping.option_map(options.get("field_map"))}
        priority_map = {**DEFAULT_PRIORITY_MAP, **mapping.option_map(options.get("priority_map"))}
        self_users = {
            key
            for key in (_org_key(str(v)) for v in mapping.option_list(options.get("self_user_ids")))
            if key is not None
        }
        lead_types = {str(t) for t in mapping.option_list(options.get("object_types"))} or {"Lead"}

        def notification_events(notification: Element) -> list[LeadEvent]:
            notification_id = _text(notification, "Id")
            sobject = notification.find(f"{{{OUTBOUND_NS}}}sObject")
            if not notification_id or sobject is None:
                return []
            if _xsi_type(sobject) not in lead_types:
                return []  # an outbound message for another object: not ours to track
            fields = _fields(sobject)
            lead_id = fields.get("Id")
            if not lead_id:
                return []  # a record deleted before delivery arrives without data
            return _events(
                notification_id=notification_id,
                lead_id=lead_id,
                fields=fields,
                field_map=field_map,
                priority_map=priority_map,
                status_overrides=config.status_map,
                self_users=self_users,
                received_at=request.received_at,
            )

        return from_parts(
            notifications.findall(f"{{{OUTBOUND_NS}}}Notification"), notification_events
        )

    def success_response(self, accepted: int, duplicates: int) -> SuccessResponse:
        """Salesforce keeps retrying a message until it reads ``<Ack>true</Ack>``."""
        return SuccessResponse(body=ACK, media_type="text/xml")


def _events(
    *,
    notification_id: str,
    lead_id: str,
    fields: Mapping[str, str | None],
    field_map: Mapping[str, str],
    priority_map: Mapping[str, str],
    status_overrides: Mapping[str, str],
    self_users: set[str],
    received_at: datetime,
) -> list[LeadEvent]:
    def value(canonical: str) -> str | None:
        name = field_map.get(canonical)
        raw = fields.get(name) if name else None
        return raw if raw else None

    modified = _timestamp(fields.get("LastModifiedDate")) or _timestamp(
        fields.get("SystemModstamp")
    )
    occurred_at = modified or received_at.astimezone(UTC)
    created = _timestamp(fields.get("CreatedDate"))

    raw_status = value("status")
    status = (
        mapping.map_status(raw_status, DEFAULT_STATUS_MAP, status_overrides) if raw_status else None
    )
    owner = value("owner")
    rating = value("priority")
    consumed = set(field_map.values()) | _BOOKKEEPING
    attributes: dict[str, Any] = {
        name: raw for name, raw in fields.items() if name not in consumed and raw is not None
    }
    if raw_status:
        attributes["crm_status"] = raw_status
    score_text = value("score")
    snapshot = mapping.within_limits(
        LeadSnapshot(
            id=lead_id,
            status=status,
            owner=owner,
            team=value("team"),
            email=value("email"),
            name=value("name") or _full_name(fields),
            source=value("source"),
            segment=value("segment"),
            priority=priority_map.get(rating, rating) if rating else None,
            score=mapping.parse_number(score_text),
            country=value("country"),
            attributes=attributes,
        )
    )
    modified_by = fields.get("LastModifiedById")
    self_originated = bool(modified_by) and _org_key(modified_by or "") in self_users

    def event(kind: str, type_: EventType, **parts: Any) -> LeadEvent:
        return LeadEvent(
            event_id=f"{notification_id}:{kind}",
            type=type_,
            occurred_at=occurred_at,
            lead=mapping.lead_for(type_, snapshot),
            self_originated=self_originated,
            **parts,
        )

    if (fields.get("IsDeleted") or "").lower() == "true":
        return [event("deleted", "lead.deleted")]
    out: list[LeadEvent] = []
    if created is not None and modified is not None and created == modified:
        out.append(event("created", "lead.created"))
    if status:
        reason = mapping.status_reason(status, raw_status)
        out.append(
            event("status", "lead.status_changed", status=StatusChange(to=status, reason=reason))
        )
    if owner:
        out.append(event("owner", "lead.assigned", owner=OwnerChange(to=snapshot.owner)))
    if not out:
        out.append(event("updated", "lead.updated"))
    return out


def _notifications(body: bytes) -> Element:
    """The ``notifications`` element, parsed without DTDs, entities or external references."""
    try:
        root: Element = SafeElementTree.fromstring(
            body, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except DefusedXmlException as exc:
        raise BadPayload(f"refused XML construct in the body: {type(exc).__name__}") from None
    except (ParseError, ValueError, UnicodeError) as exc:
        raise BadPayload(f"body is not well-formed XML: {exc}") from None
    if root.tag == f"{{{OUTBOUND_NS}}}notifications":
        return root
    found: Element | None = root.find(f".//{{{OUTBOUND_NS}}}notifications")
    if found is None:
        raise BadPayload("not a Salesforce outbound message: no notifications element")
    return found


def _text(parent: Element, name: str) -> str | None:
    child = parent.find(f"{{{OUTBOUND_NS}}}{name}")
    if child is None or child.text is None:
        return None
    return child.text.strip() or None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _xsi_type(element: Element) -> str:
    declared = element.get(f"{{{XSI_NS}}}type") or ""
    return declared.rsplit(":", 1)[-1]


def _fields(sobject: Element) -> dict[str, str | None]:
    """Field values by API name; ``xsi:nil`` means empty. Nested elements are not field values."""
    fields: dict[str, str | None] = {}
    for child in sobject:
        if len(child):
            continue
        if (child.get(f"{{{XSI_NS}}}nil") or "").lower() == "true":
            fields[_local(child.tag)] = None
        else:
            fields[_local(child.tag)] = (child.text or "").strip() or None
    return fields


def _full_name(fields: Mapping[str, str | None]) -> str | None:
    if fields.get("Name"):
        return fields["Name"]
    parts = [fields.get("FirstName"), fields.get("LastName")]
    joined = " ".join(part for part in parts if part)
    return joined or None


def _org_key(value: str) -> str | None:
    """The case-sensitive 15-character form of a Salesforce id (18-char ids add a checksum)."""
    value = value.strip()
    if len(value) not in (15, 18) or not value.isalnum() or not value.isascii():
        return None
    return value[:15]


def _timestamp(value: str | None) -> datetime | None:
    """An xsd:dateTime (Salesforce sends GMT) as aware UTC; ``None`` when absent or unreadable."""
    if not value:
        return None
    try:
        return mapping.parse_timestamp(value)
    except ValueError:
        return None


ADAPTER = SalesforceAdapter()
