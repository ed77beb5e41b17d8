"""The project's own format (CONTRACT.md §2): Standard Webhooks-signed JSON, one event or a batch.

Validation is all-or-nothing per delivery: one invalid event rejects the batch with a 422 that
lists every problem by index and field, so a sender can fix and resend the whole batch.
"""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from service import json_codec
from service.crm import signatures
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
from service.sla.types import Activity, LeadEvent, LeadSnapshot, OwnerChange, StatusChange

MAX_BATCH = 1000
# The part of the body each typed event must carry.
TYPED_PART = {
    "lead.status_changed": "status",
    "lead.assigned": "owner",
    "lead.activity": "activity",
}


class _Lead(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)

    id: str = Field(min_length=1, max_length=255)
    status: str | None = Field(default=None, max_length=64)
    owner: str | None = Field(default=None, max_length=255)
    team: str | None = Field(default=None, max_length=255)
    email: str | None = Field(default=None, max_length=320)
    name: str | None = Field(default=None, max_length=255)
    source: str | None = Field(default=None, max_length=255)
    segment: str | None = Field(default=None, max_length=255)
    priority: str | None = Field(default=None, max_length=64)
    score: float | None = None
    country: str | None = Field(default=None, max_length=64)
    attributes: dict[str, Any] = Field(default_factory=dict)


class _Status(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    from_: str | None = Field(default=None, alias="from", max_length=64)
    to: str = Field(min_length=1, max_length=64)
    reason: str | None = Field(default=None, max_length=1000)


class _Owner(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    from_: str | None = Field(default=None, alias="from", max_length=255)
    to: str | None = Field(default=None, max_length=255)


class _Activity(BaseModel):
    model_config = ConfigDict(extra="ignore")

    kind: str = Field(min_length=1, max_length=64)
    outcome: str | None = Field(default=None, max_length=64)
    by: str | None = Field(default=None, max_length=255)


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore")

    event_id: str = Field(min_length=1, max_length=255)
    type: Literal[
        "lead.created",
        "lead.status_changed",
        "lead.assigned",
        "lead.activity",
        "lead.updated",
        "lead.deleted",
    ]
    occurred_at: datetime
    lead: _Lead
    # Validated even when absent, so a missing typed part is reported under its own name.
    status: _Status | None = Field(default=None, validate_default=True)
    owner: _Owner | None = Field(default=None, validate_default=True)
    activity: _Activity | None = Field(default=None, validate_default=True)

    @field_validator("occurred_at")
    @classmethod
    def _needs_offset(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("needs a UTC offset, e.g. 2026-11-23T14:05:00-03:00")
        return value.astimezone(UTC)

    @field_validator("status", "owner", "activity")
    @classmethod
    def _typed_part_present(cls, value: Any, info: ValidationInfo) -> Any:
        kind = info.data.get("type")
        if value is None and TYPED_PART.get(str(kind)) == info.field_name:
            raise ValueError(f"{kind} needs a '{info.field_name}' object")
        return value

    def to_event(self) -> LeadEvent:
        lead = self.lead
        return LeadEvent(
            event_id=self.event_id,
            type=self.type,
            occurred_at=self.occurred_at,
            lead=LeadSnapshot(*_snapshot_values(lead)),
            status=StatusChange(
                to=self.status.to, from_=self.status.from_, reason=self.status.reason
            )
            if self.status
            else None,
            owner=OwnerChange(to=self.owner.to, from_=self.owner.from_) if self.owner else None,
            activity=Activity(self.activity.kind, self.activity.outcome, self.activity.by)
            if self.activity
            else None,
        )


# A snapshot's fields in its own order, read in one call: a batch converts a thousand of them.
_snapshot_values = attrgetter(*(f.name for f in fields(LeadSnapshot)))


def _field_errors(index: int, exc: ValidationError) -> list[FieldError]:
    errors = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"] if part not in ("function-after",)]
        errors.append(FieldError(index=index, field=".".join(loc) or "event", message=error["msg"]))
    return errors


class GenericAdapter:
    source = "generic"

    def authenticate(self, request: InboundRequest, config: SourceConfig) -> None:
        if not config.secret:
            raise Unauthorized(
                "no secret configured for source 'generic': set LEAD_SLA_WEBHOOK_SECRET_GENERIC"
            )
        signatures.verify(
            config.secret, request.headers, request.body, request.received_at,
            config.tolerance_seconds,
        )  # fmt: skip

    def parse(self, request: InboundRequest, config: SourceConfig) -> ParsedDelivery:
        try:
            body = json_codec.loads(request.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadPayload(f"body is not valid JSON: {exc}") from None
        if isinstance(body, dict) and "events" in body:
            items = body["events"]
            if not isinstance(items, list):
                raise InvalidEvents([FieldError(0, "events", "must be a list")])
        elif isinstance(body, dict):
            items = [body]
        else:
            raise InvalidEvents([FieldError(0, "body", 'must be an event or {"events": [...]}')])
        if not items:
            raise InvalidEvents([FieldError(0, "events", "must not be empty")])
        if len(items) > MAX_BATCH:
            raise InvalidEvents(
                [FieldError(0, "events", f"at most {MAX_BATCH} events per request")]
            )
        events: list[LeadEvent] = []
        errors: list[FieldError] = []
        for index, item in enumerate(items):
            try:
                events.append(_Event.model_validate(item).to_event())
            except ValidationError as exc:
                errors.extend(_field_errors(index, exc))
        if errors:
            raise InvalidEvents(errors)
        return ParsedDelivery(events=events)

    def success_response(self, accepted: int, duplicates: int) -> SuccessResponse:
        return SuccessResponse()


ADAPTER = GenericAdapter()
