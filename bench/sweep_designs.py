"""What a burst of due timers would cost under other ways of firing them, on this machine: the
figures to decide the fire-lag target with.

``sweep.py`` drains 100,000 cycles due at once with the service's sweep. A p99 fire lag of 2 s
needs about 50,000 fired/s, since the last timers of a burst wait for the whole drain. This
script drains the same rows, in the same batches (``--batch-size``) and the same number of
concurrent transactions (``--concurrency``), under each of these designs, re-loaded per run:

- ``service``: ``service.sweep.sweep`` as it is (claim the cycle rows, fire their schedules,
  update them, write one outbox row with its body per notice);
- ``claim-update-insert``: the same three writes, hand-written for this one shape of cycle
  (one breach step): what the statement's generality costs;
- ``fewer-indexes``: as ``claim-update-insert``, without the cycle index the sweep does not
  use (``due_at, id``, which the API's work queue and the reports read): an update that
  cannot be done in place writes an entry into every index;
- ``fewer-indexes-no-row-locks``: as above, and each transaction drains a share of the cycles
  of its own (``id % concurrency``) without locking rows, as workers holding an advisory lock
  per share would: what ``FOR UPDATE SKIP LOCKED`` costs;
- ``timers-hot-update``: timers in a narrow table of their own (cycle id, fire time), deleted
  when they fire; the cycle row updated without touching an indexed column (so PostgreSQL can
  update it in place: no ``next_fire_at`` or ``state`` index, fillfactor 70);
- ``timers-only``: as above, but the cycle row is not written at all (its state would have to
  be derived when read);
- ``timers-only-no-body``: as above, and the outbox row holds no body (it would be rendered at
  delivery).

Baseline, same run: ``outbox-only``, the outbox rows with their bodies built in SQL and inserted
in the same batches, nothing claimed or updated — the floor of "write the notices".

Fire lag of a timer: wall time at which the transaction that wrote its outbox row committed,
minus the start of the drain (as in ``sweep.py``).

    python bench/sweep_designs.py              # 3 runs of each design (~5 min)
    python bench/sweep_designs.py --runs 1 --designs service,fewer-indexes-no-row-locks
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    backend_cpu,
    median,
    migrate,
    percentile,
    pg_connection,
    print_header,
    recreate_database,
    spread,
)
from sweep import (
    add_drain_arguments,
    due_in_last_hours,
    load_cycles,
    policy_version,
    run_service_sweep,
)

from service.outbox import pg_cycle_payload, pg_rfc3339

# The notice of a disposition cycle's breach, as the service writes it (see ``sweep.py``'s rows).
_NOTICE = f"""SELECT 'cycle-' || c.id || '-breach' AS key, 'sla.breached' AS type,
    {pg_rfc3339("c.due_at")} AS occurred_at, true AS late, 'breached' AS state,
    '86400.0' AS elapsed, '0.0' AS remaining, c.id, c.lead_id, c.policy_id, c.number, c.owner,
    c.team, c.started_at, c.due_at, c.attempts"""
_OUTBOX = """INSERT INTO outbox (key, cycle_id, type, channel, channel_type, recipient, payload,
    status, attempts, next_attempt_at, created_at)"""
_INSERT_NOTICES = f"""{_OUTBOX}
    SELECT m.key, m.id, m.type, 'log', 'log', m.owner, {pg_cycle_payload("m", "m", "l")},
           'pending', 0, $1, $1
    FROM notices AS m JOIN leads AS l ON l.id = m.lead_id
    ON CONFLICT (key) DO NOTHING"""
_MARK_BREACHED = """fired = CAST('["breach"]' AS json), state = 'breached',
    breached_at = c.due_at, announced_outcome = 'breached', updated_at = $1"""
_CLAIM_TIMERS = """DELETE FROM sla_timers WHERE cycle_id IN (
    SELECT cycle_id FROM sla_timers WHERE fire_at <= $1 ORDER BY fire_at LIMIT $2
    FOR UPDATE SKIP LOCKED) RETURNING cycle_id"""


def _claim_update_insert(share: str, lock: str) -> str:
    return f"""WITH claimed AS MATERIALIZED (
            SELECT c.ctid AS address, c.* FROM sla_cycles AS c WHERE c.next_fire_at <= $1
            {share} ORDER BY c.next_fire_at LIMIT $2 {lock}),
        updated AS (UPDATE sla_cycles AS c SET {_MARK_BREACHED}, next_fire_at = NULL
                    FROM claimed WHERE c.ctid = claimed.address),
        notices AS ({_NOTICE} FROM claimed AS c)
        {_INSERT_NOTICES}"""


# One batch of each design: $1 = now, $2 = batch size (``outbox-only``: $3 = first cycle id;
# ``fewer-indexes-no-row-locks``: $3 = the transaction's share, $4 = how many shares).
STATEMENTS = {
    "outbox-only": f"""WITH due AS (SELECT * FROM sla_cycles WHERE id >= $3 ORDER BY id LIMIT $2),
        notices AS ({_NOTICE} FROM due AS c)
        {_INSERT_NOTICES}""",
    "claim-update-insert": _claim_update_insert(share="", lock="FOR UPDATE SKIP LOCKED"),
    "fewer-indexes": _claim_update_insert(share="", lock="FOR UPDATE SKIP LOCKED"),
    "fewer-indexes-no-row-locks": _claim_update_insert(share="AND c.id % $4 = $3", lock=""),
    "timers-hot-update": f"""WITH timers AS ({_CLAIM_TIMERS}),
        claimed AS MATERIALIZED (SELECT c.ctid AS address, c.* FROM timers
                                 JOIN sla_cycles AS c ON c.id = timers.cycle_id),
        updated AS (UPDATE sla_cycles AS c SET {_MARK_BREACHED}
                    FROM claimed WHERE c.ctid = claimed.address),
        notices AS ({_NOTICE} FROM claimed AS c)
        {_INSERT_NOTICES}""",
    "timers-only": f"""WITH timers AS ({_CLAIM_TIMERS}),
        notices AS ({_NOTICE} FROM timers JOIN sla_cycles AS c ON c.id = timers.cycle_id)
        {_INSERT_NOTICES}""",
    "timers-only-no-body": f"""WITH timers AS ({_CLAIM_TIMERS})
        {_OUTBOX}
        SELECT 'cycle-' || cycle_id || '-breach', cycle_id, 'sla.breached', 'log', 'log', NULL,
               CAST('{{}}' AS json), 'pending', 0, $1, $1
        FROM timers ON CONFLICT (key) DO NOTHING""",
}

_FEWER_INDEXES = ("DROP INDEX ix_sla_cycles_due_at_id",)
# Timers in a table of their own, and cycle rows that can be updated in place.
_TIMER_TABLE = (
    "DROP INDEX ix_sla_cycles_next_fire_at",
    "DROP INDEX ix_sla_cycles_due_at_id",
    "ALTER TABLE sla_cycles SET (fillfactor = 70)",
    "VACUUM FULL sla_cycles",
    "CREATE TABLE sla_timers (cycle_id bigint PRIMARY KEY, fire_at timestamptz NOT NULL)",
    "CREATE INDEX ix_sla_timers_fire_at ON sla_timers (fire_at)",
    "INSERT INTO sla_timers SELECT id, next_fire_at FROM sla_cycles",
    "VACUUM ANALYZE sla_timers",
    "VACUUM ANALYZE sla_cycles",
    "CHECKPOINT",
)
# What each design changes in the schema before its drain.
_SCHEMA = {
    "fewer-indexes": _FEWER_INDEXES,
    "fewer-indexes-no-row-locks": _FEWER_INDEXES,
    **{name: _TIMER_TABLE for name in STATEMENTS if name.startswith("timers")},
}


async def run_design(
    url: str, name: str, cycles: int, batch: int, concurrency: int
) -> dict[str, Any]:
    statement = STATEMENTS[name]
    committed: list[tuple[float, int]] = []  # (seconds since start, outbox rows) per transaction
    next_id = 1

    async def drain(connection: Any, share: int) -> None:
        nonlocal next_id
        while True:
            args: list[Any] = [now, batch]
            if name == "outbox-only":  # nothing is claimed: hand out ranges of ids instead
                if next_id > cycles:
                    return
                args.append(next_id)
                next_id += batch
            elif name.endswith("no-row-locks"):
                args += [share, concurrency]
            async with connection.transaction():
                status = await connection.execute(statement, *args)
            rows = int(status.split()[-1])
            committed.append((time.perf_counter() - started, rows))
            if rows == 0:
                return

    async with contextlib.AsyncExitStack() as stack:
        connections = [
            await stack.enter_async_context(pg_connection(url)) for _ in range(concurrency)
        ]
        for ddl in _SCHEMA.get(name, ()):
            await connections[0].execute(ddl)
        for connection in connections:
            await connection.execute("SET jit = off")  # as the service's sweep
        cpu_before = await backend_cpu(url)
        now = datetime.now(UTC)
        started = time.perf_counter()
        await asyncio.gather(*(drain(c, share) for share, c in enumerate(connections)))
        elapsed = time.perf_counter() - started
        cpu = sum(t - cpu_before.get(pid, 0.0) for pid, t in (await backend_cpu(url)).items())
    fired = sum(rows for _, rows in committed)
    lags = [at for at, rows in committed for _ in range(rows)]
    return {
        "fired": fired,
        "fired_s": fired / elapsed,
        "lag_p99": percentile(lags, 0.99),
        "db_cpu_us": 1e6 * cpu / max(fired, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_drain_arguments(parser, database="lead_sla_bench_sweep_designs", runs=3)
    parser.add_argument(
        "--designs",
        help="comma-separated designs to run (default: all, the service's sweep included)",
    )
    args = parser.parse_args()
    if args.cycles > 2_000_000:
        parser.error("bounded: at most 2,000,000 due cycles")
    url, version = args.database_url, policy_version()
    print_header(
        "timer sweep under other firing designs",
        {
            "database": url,
            "drain": f"{args.cycles:,} cycles due at once, batches of {args.batch_size}, "
            f"{args.concurrency} transactions at once, {args.runs} runs per design",
        },
    )
    designs: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
        "service": lambda: run_service_sweep(url, args.batch_size, args.concurrency),
        **{
            name: partial(run_design, url, name, args.cycles, args.batch_size, args.concurrency)
            for name in STATEMENTS
        },
    }
    if args.designs:
        chosen = args.designs.split(",")
        if unknown := set(chosen) - set(designs):
            parser.error(f"unknown designs {sorted(unknown)}; known: {', '.join(designs)}")
        designs = {name: designs[name] for name in chosen}
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in designs}
    for run in range(args.runs):
        for name, measure in designs.items():
            recreate_database(url)  # the timer designs change the schema
            migrate(url)
            now = datetime.now(UTC)
            asyncio.run(
                load_cycles(url, args.cycles, due_in_last_hours(args.cycles, now), version, now)
            )
            figures = asyncio.run(measure())
            if "db_cpu_us" not in figures:  # the service's figures: CPU share of the drain
                figures["db_cpu_us"] = 1e6 * figures["db_cpu_share"] / figures["fired_s"]
            results[name].append(figures)
            print(
                f"   run {run + 1} {name:20}: {figures['fired_s']:9,.0f} fired/s, "
                f"lag p99 {figures['lag_p99']:.2f} s, PostgreSQL {figures['db_cpu_us']:.0f} µs "
                f"CPU per timer ({figures['fired']} fired)",
                flush=True,
            )
    print(f"   medians over {args.runs} runs (min–max):")
    for name, runs in results.items():
        print(
            f"   {name:20}: {spread([r['fired_s'] for r in runs])} fired/s, lag p99 "
            f"{spread([r['lag_p99'] for r in runs])} s, PostgreSQL "
            f"{median([r['db_cpu_us'] for r in runs]):.0f} µs per timer"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
