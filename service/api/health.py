"""Liveness, readiness and metrics; unauthenticated so probes and scrapers need no key."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from service import metrics
from service.api.errors import DATABASE_ERRORS
from service.runtime import Runtime

router = APIRouter(tags=["health"])
HEARTBEAT_STALE_SECONDS = 30.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    runtime: Runtime = request.app.state.runtime
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(2), runtime.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except DATABASE_ERRORS as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    if runtime.runs_worker and getattr(request.app.state, "scheduler", None) is not None:
        beat = runtime.last_sweep_at
        age = None if beat is None else time.monotonic() - beat
        started = request.app.state.started_monotonic
        if age is not None and age <= HEARTBEAT_STALE_SECONDS:
            checks["scheduler"] = "ok"
        elif age is None and time.monotonic() - started <= HEARTBEAT_STALE_SECONDS:
            checks["scheduler"] = "starting"
        else:
            checks["scheduler"] = "stalled: no sweep completed recently"
    ready = all(v in ("ok", "starting") for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get("/metrics")
async def prometheus_metrics() -> Response:
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
