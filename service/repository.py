"""Queries shared by ingest, the sweep and the API. Repositories add and flush; the caller that
opened the transaction commits it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from service.models import Base, Lead

CHUNK = 500  # keeps IN lists and multi-row VALUES well under every driver's parameter limit


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def insert_ignoring_conflicts(session: AsyncSession, model: type[Base]) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` in the session's dialect: how the event log and the
    outbox make redelivery and double-firing no-ops."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(model).on_conflict_do_nothing()
    return sqlite.insert(model).on_conflict_do_nothing()


def is_postgresql(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


async def lead_ids(
    session: AsyncSession, source: str, external_ids: Iterable[str]
) -> dict[str, int]:
    """Lead primary keys by CRM id, creating the leads that do not exist yet."""
    wanted = sorted(set(external_ids))
    found: dict[str, int] = {}
    for part in chunks(wanted):
        found.update(await _select_ids(session, source, part))
    missing = [ext for ext in wanted if ext not in found]
    for part in chunks(missing):
        rows = [
            {"source": source, "external_id": ext, "attributes": {}, "deleted": False}
            for ext in part
        ]
        statement = insert_ignoring_conflicts(session, Lead).returning(Lead.external_id, Lead.id)
        found.update({ext: pk for ext, pk in await session.execute(statement.values(rows))})
        raced = [ext for ext in part if ext not in found]  # created by a concurrent delivery
        if raced:
            found.update(await _select_ids(session, source, raced))
    return found


async def _select_ids(session: AsyncSession, source: str, ids: Sequence[str]) -> dict[str, int]:
    condition: ColumnElement[bool] = (Lead.source == source) & Lead.external_id.in_(ids)
    rows = await session.execute(select(Lead.external_id, Lead.id).where(condition))
    return {ext: pk for ext, pk in rows}
