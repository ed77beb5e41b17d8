"""Everything a running service holds: built in the app's lifespan, passed to whoever needs it.
Nothing connects at import time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.clock import Clock
from service.config import Settings
from service.db import create_engine, read_session_factory, session_factory
from service.notify.dispatcher import RetryPolicy
from service.policies import PolicyStore

Role = Literal["api", "worker", "all"]


@dataclass
class Runtime:
    settings: Settings
    clock: Clock
    role: Role
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    reads: async_sessionmaker[AsyncSession]  # read-only: never wait for a writer on SQLite
    # Storing webhook deliveries: on PostgreSQL a pool of its own, whose connections plan each
    # statement once (``db._plan_once``); on SQLite the same engine as ``sessions``.
    ingest: async_sessionmaker[AsyncSession]
    ingest_engine: AsyncEngine
    policies: PolicyStore
    http: httpx.AsyncClient
    last_sweep_at: float | None = field(default=None)  # monotonic seconds, for /readyz

    @property
    def runs_worker(self) -> bool:
        return self.role in ("worker", "all")

    @property
    def retry(self) -> RetryPolicy:
        s = self.settings
        return RetryPolicy(
            max_attempts=s.delivery_max_attempts,
            base_seconds=s.delivery_backoff_base_seconds,
            max_seconds=s.delivery_backoff_max_seconds,
            lease_seconds=s.lease_seconds,
        )

    async def close(self) -> None:
        await self.http.aclose()
        await self.ingest_engine.dispose()
        await self.engine.dispose()


def build_runtime(
    settings: Settings,
    clock: Clock,
    role: Role = "all",
    http: httpx.AsyncClient | None = None,
) -> Runtime:
    engine = create_engine(settings.database_url, settings.db_pool_size)
    ingest_engine = engine
    if not settings.is_sqlite:
        ingest_engine = create_engine(settings.database_url, settings.db_pool_size, plan_once=True)
    return Runtime(
        settings=settings,
        clock=clock,
        role=role,
        engine=engine,
        sessions=session_factory(engine),
        reads=read_session_factory(engine),
        ingest=session_factory(ingest_engine),
        ingest_engine=ingest_engine,
        policies=PolicyStore(settings.policy_file, settings.environment()),
        http=http or httpx.AsyncClient(timeout=settings.delivery_timeout_seconds),
    )
