"""Writing many rows in one statement: over arrays (``unnest``) on PostgreSQL, where executing a
statement per row costs more than everything else a delivery does, and as an executemany on
SQLite, where statements are cheap in-process calls."""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from typing import Any

from sqlalchemy import JSON, Column, Table, TextClause, bindparam, text, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from service.repository import chunks, is_postgresql

_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


async def insert_rows(session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert rows that all have the same keys."""
    if not rows:
        return
    if not is_postgresql(session):
        await session.execute(table.insert(), list(rows))
        return
    names = tuple(rows[0])
    for part in chunks(rows, 5000):
        await session.execute(_pg_insert(table, names), _arrays(table, names, part))


async def update_rows(session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Update rows by ``id``; every row sets the same columns (the keys besides ``id``)."""
    if not rows:
        return
    names = tuple(name for name in rows[0] if name != "id")
    if not is_postgresql(session):
        await session.execute(
            _sqlite_update(table, names),
            [{"row_id": row["id"], **{f"new_{n}": row[n] for n in names}} for row in rows],
        )
        return
    for part in chunks(rows, 5000):
        await session.execute(_pg_update(table, names), _arrays(table, ("id", *names), part))


def _arrays(table: Table, names: Sequence[str], rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    arrays: dict[str, Any] = {}
    for name in names:
        values = [row[name] for row in rows]
        if isinstance(table.c[name].type, JSON):  # sent as text, cast back in the statement
            values = [None if v is None else json.dumps(v) for v in values]
        arrays[name] = values
    return arrays


def _element(column: Column[Any]) -> str:
    return "text" if isinstance(column.type, JSON) else column.type.compile(dialect=_PG)


def _unnest(table: Table, names: Sequence[str]) -> str:
    arrays = ", ".join(f"CAST(:{n} AS {_element(table.c[n])}[])" for n in names)
    return f"unnest({arrays}) AS u({', '.join(names)})"


def _value(table: Table, name: str) -> str:
    return f"CAST(u.{name} AS json)" if isinstance(table.c[name].type, JSON) else f"u.{name}"


@cache
def _pg_insert(table: Table, names: tuple[str, ...]) -> TextClause:
    values = ", ".join(_value(table, n) for n in names)
    return text(
        f"INSERT INTO {table.name} ({', '.join(names)}) "
        f"SELECT {values} FROM {_unnest(table, names)}"
    )


@cache
def _pg_update(table: Table, names: tuple[str, ...]) -> TextClause:
    assignments = ", ".join(f"{n} = {_value(table, n)}" for n in names)
    return text(
        f"UPDATE {table.name} AS t SET {assignments} "
        f"FROM {_unnest(table, ('id', *names))} WHERE t.id = u.id"
    )


@cache
def _sqlite_update(table: Table, names: tuple[str, ...]) -> Any:
    # Bind names differ from column names: SQLAlchemy reserves those for its own SET clause.
    return (
        update(table)
        .where(table.c.id == bindparam("row_id"))
        .values({n: bindparam(f"new_{n}", type_=table.c[n].type) for n in names})
    )
