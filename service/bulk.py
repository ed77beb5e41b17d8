"""Writing many rows of several tables at once.

On PostgreSQL every table's rows travel as one JSON text (``json_to_recordset``) and all the
tables go in one statement, a data-modifying CTE each: executing a statement per row, or even
per table, costs more than everything else a delivery does. JSON rather than an array per
column: the driver encodes an array element by element, with several type checks each, which
for a 100-event delivery cost more than the database spends parsing the same rows as JSON. On
SQLite each table is an executemany, since statements there are cheap in-process calls.

The writes of one call must not depend on each other's order (on PostgreSQL they all see the
same snapshot): anything that must happen first, such as freeing a unique key, goes in an
earlier call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from sqlalchemy import JSON, Column, Table, bindparam, text, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from service import json_codec
from service.repository import insert_ignoring_conflicts, is_postgresql

_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


@dataclass(frozen=True, slots=True)
class Write:
    """Rows to insert into, or update by ``id`` in, one table; every row has the same keys.
    Rows to update must be locked by the caller's transaction (on SQLite: it holds the write
    lock), as ingest and the sweep do."""

    action: Literal["insert", "update"]
    table: Table
    rows: Sequence[dict[str, Any]]

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.rows[0])


async def write(session: AsyncSession, *writes: Write) -> None:
    todo = [w for w in writes if w.rows]
    if not todo:
        return
    if not is_postgresql(session):
        for w in todo:
            if w.action == "insert":
                await session.execute(w.table.insert(), list(w.rows))
            else:
                await session.execute(_sqlite_update(w.table, w.columns), _sqlite_params(w))
        return
    shapes = tuple((w.action, w.table, w.columns) for w in todo)
    params = {f"w{index}_rows": json_codec.dumps_rows(w.rows) for index, w in enumerate(todo)}
    await session.execute(_pg_statement(shapes), params)


def _element(column: Column[Any]) -> str:
    return "json" if isinstance(column.type, JSON) else column.type.compile(dialect=_PG)


def _insert_sql(table: Table, names: tuple[str, ...], prefix: str) -> str:
    return (
        f"INSERT INTO {table.name} ({', '.join(names)}) "
        f"SELECT {', '.join(f'u.{n}' for n in names)} FROM {_recordset(table, names, prefix)}"
    )


def _update_sql(table: Table, names: tuple[str, ...], prefix: str) -> str:
    assignments = ", ".join(f"{n} = u.{n}" for n in names if n != "id")
    # Each row is found through the primary key and then updated by its physical address, so
    # the plan is a lookup per row, never a join over the whole table (see ``keyed_select``).
    # The address is read on the statement's snapshot: the rows must be locked by this
    # transaction already (as every caller does), or a concurrent update would move them.
    return (
        f"UPDATE {table.name} AS t SET {assignments} "
        f"FROM {_recordset(table, names, prefix)} CROSS JOIN LATERAL "
        f"(SELECT ctid AS address FROM {table.name} WHERE id = u.id OFFSET 0) AS found "
        "WHERE t.ctid = found.address"
    )


def _recordset(table: Table, names: tuple[str, ...], prefix: str) -> str:
    columns = ", ".join(f"{n} {_element(table.c[n])}" for n in names)
    return f"json_to_recordset(CAST(:{prefix}rows AS json)) AS u({columns})"


@cache
def _pg_statement(shapes: tuple[tuple[str, Table, tuple[str, ...]], ...]) -> Any:
    parts = [
        (_insert_sql if action == "insert" else _update_sql)(table, names, f"w{index}_")
        for index, (action, table, names) in enumerate(shapes)
    ]
    if len(parts) == 1:
        return text(parts[0])
    ctes = ", ".join(f"w{index} AS ({part})" for index, part in enumerate(parts))
    return text(f"WITH {ctes} SELECT 1")


async def insert_new(
    session: AsyncSession,
    table: Table,
    rows: Sequence[dict[str, Any]],
    returning: Sequence[str] = (),
) -> list[Any]:
    """Insert the rows whose unique keys are free (the others are skipped: a redelivery, a
    notification already written) and return ``returning`` of those inserted."""
    if not rows:
        return []
    if not is_postgresql(session):
        statement = insert_ignoring_conflicts(session, table)
        if not returning:  # an executemany, compiled once and cached
            await session.execute(statement, list(rows))
            return []
        statement = statement.values(list(rows)).returning(*(table.c[n] for n in returning))
        return list(await session.execute(statement))
    w = Write("insert", table, rows)
    result = await session.execute(
        _pg_insert_new(table, w.columns, tuple(returning)),
        {"w0_rows": json_codec.dumps_rows(rows)},
    )
    return list(result) if returning else []


@cache
def _pg_insert_new(table: Table, names: tuple[str, ...], returning: tuple[str, ...]) -> Any:
    insert = f"{_insert_sql(table, names, 'w0_')} ON CONFLICT DO NOTHING"
    if not returning:
        return text(insert)
    return text(f"{insert} RETURNING {', '.join(returning)}").columns(
        *(table.c[n] for n in returning)
    )


@cache
def keyed_select(
    table: Table, key: str, columns: tuple[str, ...] = (), where: str = "", lock: bool = False
) -> Any:
    """PostgreSQL: the rows of ``table`` whose ``key`` is in the array ``:keys`` (and that meet
    ``where``, on ``t``), in id order, optionally locked in id order.

    Each key is looked up in a ``LATERAL`` subquery the planner cannot merge into a join, so the
    plan is one lookup per key: by index on any table of more than a few pages, and on every
    table on the connections that store deliveries, which rule scans out (``db._plan_once``).
    A plain join on ``unnest`` plans as a hash join over a scan of the whole table whenever the
    statistics say the table is small, which stale statistics (a new database, a bulk import, a
    lagging autovacuum) keep saying long after it has grown: ten times slower for a 100-lead
    batch.

    Locked rows are locked in id order, whatever order the keys come in, so two transactions
    locking overlapping rows by different keys (CRM ids, primary keys) cannot deadlock: the rows
    are found first, then locked one by one in id order.
    """
    names = columns or tuple(table.c.keys())
    selected = ", ".join(f"t.{n}" for n in names)
    lookup = (
        f"unnest(CAST(:keys AS {_element(table.c[key])}[])) AS k(key) CROSS JOIN LATERAL "
        f"(SELECT * FROM {table.name} AS t WHERE t.{key} = k.key"
        f"{' AND ' + where if where else ''} OFFSET 0) AS t"
    )
    if not lock:
        statement = f"SELECT {selected} FROM {lookup} ORDER BY t.id"
    else:
        # Found first, then locked by a nested loop over the sorted ids: a lock taken in the
        # outer query would be taken inside the lookup, in the keys' order.
        statement = (
            f"WITH found AS MATERIALIZED (SELECT t.id FROM {lookup} ORDER BY t.id) "
            f"SELECT {selected} FROM found AS f CROSS JOIN LATERAL "
            f"(SELECT * FROM {table.name} AS t WHERE t.id = f.id FOR UPDATE) AS t ORDER BY t.id"
        )
    return text(statement).columns(*(table.c[n] for n in names))


def _sqlite_params(w: Write) -> list[dict[str, Any]]:
    return [{f"new_{name}": value for name, value in row.items()} for row in w.rows]


@cache
def _sqlite_update(table: Table, names: tuple[str, ...]) -> Any:
    # Bind names differ from column names: SQLAlchemy reserves those for its own SET clause.
    return (
        update(table)
        .where(table.c.id == bindparam("new_id"))
        .values({n: bindparam(f"new_{n}", type_=table.c[n].type) for n in names if n != "id"})
    )
