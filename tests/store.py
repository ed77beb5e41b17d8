"""Looking into the database and driving the worker by hand in tests: row counts, a scheduler
"tick" (sweep, then dispatch), metric deltas, and an app built from modified settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import ColumnElement, func, select

from service.app import create_app
from service.clock import FrozenClock
from service.config import Settings
from service.models import Base, Cycle, Lead, LeadEventRow, OutboxMessage, RawRequest
from service.notify.dispatcher import dispatch
from service.runtime import Runtime
from service.sweep import sweep

ALL_TABLES: tuple[type[Base], ...] = (Lead, LeadEventRow, RawRequest, Cycle, OutboxMessage)


async def count(runtime: Runtime, model: type[Base], *where: ColumnElement[bool]) -> int:
    async with runtime.sessions() as session:
        query = select(func.count()).select_from(model)
        for condition in where:
            query = query.where(condition)
        return int(await session.scalar(query) or 0)


async def table_counts(runtime: Runtime) -> dict[str, int]:
    return {model.__tablename__: await count(runtime, model) for model in ALL_TABLES}


async def rows(runtime: Runtime, model: type[Any], *where: ColumnElement[bool]) -> list[Any]:
    async with runtime.sessions() as session:
        query = select(model)
        for condition in where:
            query = query.where(condition)
        return list((await session.scalars(query.order_by(model.id))).all())


async def tick(runtime: Runtime) -> None:
    """What the scheduler does each second: sweep, then deliver."""
    await sweep(runtime.sessions, runtime.clock.now(), runtime.policies.current)
    await dispatch(runtime.sessions, runtime.http, runtime.clock, runtime.policies.current,
                   runtime.retry)  # fmt: skip


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@asynccontextmanager
async def running_app(
    settings: Settings, clock: FrozenClock, **update: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """An app (and a client for it) on ``settings`` with some fields replaced."""
    application = create_app(settings.model_copy(update=update), clock=clock, run_scheduler=False)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield application, http
