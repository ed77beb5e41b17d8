"""The baseline the ingest benchmarks compare against: a minimal FastAPI app, served by uvicorn
exactly as ``lead-sla serve`` serves the service (one process, uvloop + httptools, no access
log), whose ``POST /webhooks/generic`` reads the body, parses the JSON and inserts the event(s)
into a table shaped like ``lead_events`` with one commit per request — through the service's own
engine factory (``service.db.create_engine``: same pool, same settings).

It does no signature check, no validation, no lead lookup and no SLA derivation: it is the
floor cost of "persist, then answer 202" on this stack. ``POST /noop`` answers 202 without the
database, to show what the load generator itself can drive.

    python bench/baseline_server.py --database-url postgresql+asyncpg://postgres@127.0.0.1/x
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    insert,
)

from service.db import create_engine, session_factory
from service.models import UTCDateTime

metadata = MetaData()
baseline_events = Table(
    "baseline_events",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("source", String(32), nullable=False),
    Column("event_id", String(255), nullable=False),
    Column("lead_external_id", String(255), nullable=False),
    Column("type", String(32), nullable=False),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("data", JSON, nullable=False),
    UniqueConstraint("source", "event_id"),
)


def _row(event: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {
        "source": "generic",
        "event_id": event["event_id"],
        "lead_external_id": event["lead"]["id"],
        "type": event["type"],
        "occurred_at": datetime.fromisoformat(event["occurred_at"]),
        "received_at": now,
        "data": event,
    }


def create_app(database_url: str, pool_size: int) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(database_url, pool_size)
        app.state.sessions = session_factory(engine)
        try:
            yield
        finally:
            await engine.dispose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/noop")
    async def noop(request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse({"accepted": 1, "duplicates": 0}, status_code=202)

    @app.post("/webhooks/generic")
    async def receive(request: Request) -> JSONResponse:
        payload = json.loads(await request.body())
        now = datetime.now(UTC)
        async with app.state.sessions() as session, session.begin():
            if "events" in payload:  # a batch: one executemany
                rows = [_row(event, now) for event in payload["events"]]
                await session.execute(insert(baseline_events), rows)
            else:  # one event: one INSERT
                rows = [_row(payload, now)]
                await session.execute(insert(baseline_events).values(rows[0]))
        return JSONResponse({"accepted": len(rows), "duplicates": 0}, status_code=202)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--pool-size", type=int, default=20, help="as LEAD_SLA_DB_POOL_SIZE")
    parser.add_argument("--workers", type=int, default=1, help="as `lead-sla serve --workers`")
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("loopback only")
    asyncio.run(_create_table(args.database_url))  # once, before any worker process starts
    options = {"host": args.host, "port": args.port, "log_level": "warning", "access_log": False}
    if args.workers > 1:  # as the service does it: a process per worker, a socket each
        from service import api_processes

        os.environ.update(BASELINE_DATABASE_URL=args.database_url,
                          BASELINE_POOL_SIZE=str(args.pool_size))  # fmt: skip
        sys.exit(api_processes.serve(args.host, args.port, args.workers, "warning",
                                     app="baseline_server:app_from_environment"))  # fmt: skip
    uvicorn.run(create_app(args.database_url, args.pool_size), **options)


async def _create_table(database_url: str) -> None:
    engine = create_engine(database_url)
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    await engine.dispose()


def app_from_environment() -> FastAPI:
    return create_app(os.environ["BASELINE_DATABASE_URL"], int(os.environ["BASELINE_POOL_SIZE"]))


if __name__ == "__main__":
    main()
