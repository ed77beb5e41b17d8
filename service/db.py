"""Engines, sessions and migrations for PostgreSQL (asyncpg) and the embedded SQLite default.

SQLite runs in WAL mode with a busy timeout, and every transaction that may write starts with
``BEGIN IMMEDIATE``: the write lock is taken up front, so two writers queue instead of failing
half-way with "database is locked" when a read turns into a write. Sessions from
``read_session_factory`` only read: their transactions start with a plain ``BEGIN`` and, in WAL
mode, read a snapshot without waiting for a writer, so an API read or a gauge refresh never
queues behind a busy ingest or sweep.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from service import json_codec

MIGRATIONS = Path(__file__).parent / "migrations"
_READ_ONLY = "lead_sla_read_only"  # execution option of the engine behind read sessions


def create_engine(url: str, pool_size: int = 20, *, plan_once: bool = False) -> AsyncEngine:
    """An engine for ``url``; on PostgreSQL with ``pool_size`` connections kept open, which with
    ``plan_once`` plan each statement once (see ``_plan_once``): for storing deliveries only.

    No overflow: connections opened beyond the pool under load would be closed again as soon as
    they are returned, and each new one costs a connection start-up and its statements prepared
    anew, so under sustained load requests wait for a pooled connection instead. No ping before
    each checkout either (on asyncpg that is three round trips per transaction): a connection the
    database closed (a restart, a failover) fails its first statement, SQLAlchemy then discards
    every pooled connection, and callers retry once where that is safe (``stale_connection``).
    """
    codec = {"json_serializer": json_codec.dumps, "json_deserializer": json_codec.loads}
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30}, **codec)
        _configure_sqlite(engine)
        return engine
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=10,
        **codec,
    )
    if plan_once:
        _plan_once(engine)
    return engine


# Session settings, sent once per new connection (a pooler must use session pooling anyway).
_PLAN_ONCE = "SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off"


def _plan_once(engine: AsyncEngine) -> None:
    """Let PostgreSQL plan each statement once per connection instead of once per execution:
    planning ingest's statements cost as much as running them, and their array parameters keep
    the plan cache from ever settling on a generic plan by itself.

    The plan made once must stay right as tables grow, whatever the statistics say: every
    statement of a delivery looks its rows up by key through an index (``bulk.keyed_select``),
    and scans are ruled out, since a plan made while a table was a page or two (a new database)
    would otherwise scan it, and keep scanning it per key once it holds millions of rows. Only
    for the pool that stores deliveries: the API's filtered reads, reports and the sweep keep
    plans made for their parameters.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.run_async(lambda connection: connection.execute(_PLAN_ONCE))


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event own the transaction start (see module docstring).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        read_only = connection.get_execution_options().get(_READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def stale_connection(error: BaseException) -> bool:
    """The error came from a pooled connection the database had closed; the pool has been
    emptied, and the same transaction on a new connection can succeed."""
    return isinstance(error, DBAPIError) and error.connection_invalidated


_UNAVAILABLE = (OSError, TimeoutError, PoolTimeout, OperationalError, InterfaceError)


def database_unreachable(error: BaseException) -> bool:
    """The database cannot be reached or cannot serve right now (down, restarting, refusing
    connections, locked, out of pooled connections): worth retrying as it is, unlike a statement
    that is wrong. A group (concurrent sweep transactions) is if all its errors are."""
    if isinstance(error, BaseExceptionGroup):
        return all(database_unreachable(inner) for inner in error.exceptions)
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, _UNAVAILABLE)


def describe_error(error: BaseException) -> str:
    """One line for a log or a terminal: the driver's error, not SQLAlchemy's wrapping with the
    statement and a link. A group is told by its first error."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    cause = error.orig if isinstance(error, DBAPIError) and error.orig is not None else error
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0]}" if lines else type(cause).__name__


def safe_url(url: str) -> str:
    """The database URL without its password, for messages."""
    return make_url(url).render_as_string(hide_password=True)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def read_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for reading only: on SQLite they never take the write lock (module docstring),
    so a write in one would fail with "database is locked" instead of waiting its turn."""
    read_only = engine.execution_options(**{_READ_ONLY: True})
    return async_sessionmaker(read_only, expire_on_commit=False)


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL (None for PostgreSQL or in-memory SQLite)."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).resolve()


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str) -> None:
    """``alembic upgrade head``. Synchronous: call it before the event loop starts (or in a
    thread), since the migration environment runs its own loop."""
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), "head")
