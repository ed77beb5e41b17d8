"""``POST /webhooks/{source}``: authenticate, parse, persist and commit, then answer.

The order matters: size limit before reading everything, authentication before parsing (an
unauthenticated sender learns nothing about our format), and the 202 only after the commit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from service import metrics
from service.api.errors import DATABASE_ERRORS, database_unavailable
from service.crm.base import BadPayload, InboundRequest, InvalidEvents, SourceConfig, Unauthorized
from service.crm.registry import ADAPTERS
from service.db import describe_error, stale_connection
from service.event_codec import event_to_json
from service.ingest import RawDelivery, store_delivery
from service.runtime import Runtime
from service.sla.types import LeadEvent

router = APIRouter()
log = logging.getLogger(__name__)
KEPT_HEADERS = ("content-type", "user-agent", "webhook-id", "webhook-timestamp")


class BodyTooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise BodyTooLarge
    return bytes(body)


# How the NUL character can appear in a body: raw, escaped in JSON, escaped in a form.
_NUL_IN_BODY = (b"\x00", b"\\u0000", b"%00")
_NUL_MESSAGE = "contains the NUL character (\\u0000), which cannot be stored"


def _nul_errors(body: bytes, events: Sequence[LeadEvent]) -> list[dict[str, Any]]:
    """Per-event errors for text holding the NUL character, which PostgreSQL cannot store:
    the sender must hear that its event is at fault (422), not that the database is down (503,
    retried forever). It is refused on SQLite too, so that both behave alike. The body is searched
    first, so that a delivery without the character costs nothing more."""
    if not any(marker in body for marker in _NUL_IN_BODY):
        return []
    return [
        {"index": index, "field": field, "message": _NUL_MESSAGE}
        for index, event in enumerate(events)
        for field in _fields_with_nul(event_to_json(event), "")
    ]


def _fields_with_nul(value: Any, path: str) -> Iterator[str]:
    if isinstance(value, str):
        if "\x00" in value:
            yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            inner = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                yield inner
            yield from _fields_with_nul(item, inner)
    elif isinstance(value, list):
        for position, item in enumerate(value):
            yield from _fields_with_nul(item, f"{path}[{position}]")


def _outcome(source: str, outcome: str, started: float) -> None:
    metrics.WEBHOOK_REQUESTS.labels(source, outcome).inc()
    metrics.WEBHOOK_DURATION.labels(source).observe(time.perf_counter() - started)


@router.post("/webhooks/{source}", status_code=202, tags=["webhooks"])
async def receive_webhook(source: str, request: Request) -> Response:
    started = time.perf_counter()
    adapter = ADAPTERS.get(source)
    if adapter is None:
        return JSONResponse({"error": f"unknown source {source!r}"}, status_code=404)
    runtime: Runtime = request.app.state.runtime
    settings = runtime.settings
    try:
        body = await _read_body(request, settings.max_body_bytes)
    except BodyTooLarge:
        _outcome(source, "too_large", started)
        return JSONResponse(
            {"error": f"body larger than {settings.max_body_bytes} bytes"}, status_code=413
        )
    inbound = InboundRequest(
        method=request.method,
        path=request.url.path,
        query_string=request.url.query,
        headers={k.lower(): v for k, v in request.headers.items()},
        body=body,
        public_url=settings.public_url.rstrip("/"),
        received_at=runtime.clock.now(),
    )
    loaded = runtime.policies.current
    overrides = loaded.policy_set.sources.get(source)
    config = SourceConfig(
        secret=settings.webhook_secret(source),
        status_map=overrides.status_map if overrides else {},
        options=overrides.options if overrides else {},
        tolerance_seconds=settings.webhook_tolerance_seconds,
    )
    try:
        adapter.authenticate(inbound, config)
        delivery = adapter.parse(inbound, config)
    except Unauthorized as exc:
        _outcome(source, "unauthorized", started)
        return JSONResponse({"error": f"unauthorized: {exc}"}, status_code=401)
    except BadPayload as exc:
        _outcome(source, "invalid", started)
        return JSONResponse({"error": str(exc)}, status_code=400)
    except InvalidEvents as exc:
        _outcome(source, "invalid", started)
        errors = [{"index": e.index, "field": e.field, "message": e.message} for e in exc.errors]
        return JSONResponse({"errors": errors}, status_code=422)
    if errors := _nul_errors(body, delivery.events):
        _outcome(source, "invalid", started)
        return JSONResponse({"errors": errors}, status_code=422)
    raw = RawDelivery(
        headers={k: v for k, v in inbound.headers.items() if k in KEPT_HEADERS}, body=body
    )
    for attempt in (1, 2):
        try:
            async with runtime.ingest() as session, session.begin():
                result = await store_delivery(
                    session, source, delivery.events, raw, inbound.received_at, loaded
                )
            break
        except DATABASE_ERRORS as exc:
            if attempt == 1 and stale_connection(exc):
                # The database closed this pooled connection (a restart, a failover): try once
                # on a new one. Safe even if the first commit went through: events dedupe.
                continue
            log.warning(
                "webhook from %s not stored, database unavailable: %s", source, describe_error(exc)
            )
            _outcome(source, "unavailable", started)
            return database_unavailable()
    if delivery.ignored:
        metrics.EVENTS.labels(source, "ignored").inc(delivery.ignored)
    _outcome(
        source, "accepted" if result.accepted or not result.duplicates else "duplicate", started
    )
    answer = adapter.success_response(result.accepted, result.duplicates)
    if answer.body is not None:
        return Response(answer.body, status_code=200, media_type=answer.media_type)
    return JSONResponse(
        {"accepted": result.accepted, "duplicates": result.duplicates}, status_code=202
    )
