"""Queries shared by ingest, the sweep and the API. Repositories add and flush; the caller that
opened the transaction commits it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Insert, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from service.models import Base

CHUNK = 500  # keeps IN lists and multi-row VALUES well under every driver's parameter limit


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def insert_ignoring_conflicts(session: AsyncSession, model: type[Base] | Table) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` in the session's dialect: how the event log and the
    outbox make redelivery and double-firing no-ops."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(model).on_conflict_do_nothing()
    return sqlite.insert(model).on_conflict_do_nothing()


def is_postgresql(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"
