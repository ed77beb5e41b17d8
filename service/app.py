"""The FastAPI application. ``create_app`` builds everything in its lifespan: engine, sessions,
policies, HTTP client, scheduler — nothing at import time, so tests and roles choose freely."""

from __future__ import annotations

import gc
import logging
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import httpx
from fastapi import FastAPI

from service import __version__, metrics
from service.api import (
    errors,
    explain,
    health,
    leads,
    outbox,
    policies_api,
    reports,
    slas,
    webhooks,
)
from service.clock import Clock, SystemClock
from service.config import Settings
from service.crm.registry import ADAPTERS
from service.db import sqlite_path
from service.runtime import Role, build_runtime
from service.scheduler import build_scheduler
from service.worker_lock import WorkerLock

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    role: Role = "all",
    run_scheduler: bool = True,
    http: httpx.AsyncClient | None = None,
    serving: bool = False,
) -> FastAPI:
    """``serving``: the app is the process's whole life (``lead-sla serve``), not one of many
    (tests): reload policies on SIGHUP and settle the garbage collector after start-up."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = build_runtime(settings, clock or SystemClock(), role, http)
        metrics.precreate_source_series(ADAPTERS)
        app.state.runtime = runtime
        app.state.scheduler = None
        app.state.started_monotonic = time.monotonic()
        lock = None
        if runtime.runs_worker and run_scheduler:
            path = sqlite_path(settings.database_url)
            if path is not None:
                lock = WorkerLock(path)
                lock.acquire()
            app.state.scheduler = build_scheduler(runtime)
            app.state.scheduler.start()
        if serving:
            _reload_on_sighup(app)
            _settle_garbage_collector()
        try:
            yield
        finally:
            if app.state.scheduler is not None:
                app.state.scheduler.shutdown(wait=False)
            if lock is not None:
                lock.release()
            await runtime.close()

    app = FastAPI(
        title="lead-sla",
        version=__version__,
        description="Service Level Agreements between marketing and sales, measured per lead.",
        lifespan=lifespan,
    )
    errors.install(app)
    app.include_router(health.router)
    if role in ("api", "all"):
        app.include_router(webhooks.router)
        app.include_router(leads.router, prefix="/api/v1")
        app.include_router(slas.router, prefix="/api/v1")
        app.include_router(explain.router, prefix="/api/v1")
        app.include_router(reports.router, prefix="/api/v1")
        app.include_router(policies_api.router, prefix="/api/v1")
        app.include_router(outbox.router, prefix="/api/v1")
    return app


def api_app() -> FastAPI:
    """The API role as each process of ``lead-sla serve --role api --workers N`` builds it."""
    return create_app(Settings(), role="api", serving=True)


def _settle_garbage_collector() -> None:
    """Keep the cyclic garbage collector off what start-up built (modules, policies, calendars,
    SQLAlchemy's and pydantic's schemas), which lives as long as the process, and let it run
    less often over the rest. A 100-event delivery allocates tens of thousands of short-lived
    objects; with the defaults the collector's passes cost a tenth of its CPU, most of it
    re-scanning those long-lived objects."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(10_000, older, oldest)  # the youngest generation: 700 allocations by default


def _reload_on_sighup(app: FastAPI) -> None:
    import asyncio

    def reload() -> None:
        with suppress(Exception):  # the store logs the error and keeps the running set
            app.state.runtime.policies.reload()

    with suppress(NotImplementedError, RuntimeError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)
