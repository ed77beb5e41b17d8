"""The timer sweep on PostgreSQL: 100,000 cycles falling due at once, and memory with 1,000,000
open cycles.

Drain: the database holds N open ``disposition`` cycles (one ``breach`` step, as ingest writes
them for a lead that turned MQL more than 24 h ago), all with ``next_fire_at`` in the past. The
run starts at ``t0`` with everything due and calls ``service.sweep.sweep(sessions, t0, ...)``
with the service's own engine settings and default batch size and concurrency
(``LEAD_SLA_SWEEP_CONCURRENCY`` transactions at once). Figures:

- fired/s: steps fired / wall time of the whole ``sweep`` call (target >= 20,000/s);
- fire lag: per timer, the wall time at which the transaction holding its outbox row committed
  minus ``t0`` (target p99 <= 2 s). Each transaction's id is read just before it commits and
  timestamped just after (session events in this process); an outbox row's ``xmin`` names the
  transaction that wrote it.

The baseline, measured on the same rows in the same run: one ``INSERT INTO outbox ... SELECT
... FROM sla_cycles JOIN leads`` building the same rows and payloads in SQL, one commit.

Memory (``--rss``): a ``lead-sla serve --role worker`` process over a database of 1,000,000
open cycles, a few of which fall due every second for ``--rss-seconds``; its RSS is sampled
each second. It should stay flat: the sweep reads due cycles a batch at a time, never all
open ones.

    python bench/sweep.py                 # drain, 5 runs, plus the memory run
    python bench/sweep.py --no-rss        # drain only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    backend_cpu,
    median,
    migrate,
    percentile,
    pg_connection,
    pg_url,
    print_header,
    process_cpu,
    recreate_database,
    spread,
    start_service,
)

TARGET_FIRED_S = 20_000
TARGET_LAG_P99 = 2.0
POLICY = "disposition"  # one breach step, 24x7 calendar, breach notice to the owner
TARGET_SECONDS = 86_400
OWNERS = ("rep-1", "rep-2", "rep-3")
TEAMS = ("emea", "latam", "na")
LEAD_COLUMNS = (
    "id", "source", "external_id", "status", "owner", "team", "email", "lead_source",
    "priority", "country", "attributes", "deleted", "created_at", "updated_at", "last_event_at",
)  # fmt: skip
CYCLE_COLUMNS = (
    "id", "lead_id", "policy_id", "number", "policy_version", "kind", "state", "open", "owner",
    "team", "started_at", "due_at", "target_seconds", "elapsed_business_seconds", "schedule",
    "fired", "next_fire_at", "details", "at_risk", "updated_at",
)  # fmt: skip


def policy_version() -> str:
    from service.policies import PolicyStore

    return PolicyStore(None, {}).current.version


def lead_row(pk: int, at: datetime) -> tuple[Any, ...]:
    ext = f"SW-{pk}"
    owner, team = OWNERS[pk % 3], TEAMS[pk % 3]
    return (pk, "generic", ext, "mql", owner, team, f"{ext.lower()}@example.com", "webinar",
            "normal", "BR", "{}", False, at, at, at)  # fmt: skip


def cycle_row(pk: int, due: datetime, version: str, now: datetime) -> tuple[Any, ...]:
    """An open disposition cycle as ingest writes it (``ingest._apply_result``)."""
    started = due - timedelta(seconds=TARGET_SECONDS)
    schedule = [{"step": "breach", "kind": "breach", "at": due.isoformat(),
                 "offset": float(TARGET_SECONDS)}]  # fmt: skip
    details = {"calendar": "24x7", "start_event_id": f"SW-{pk}-1", "stop_event_id": None,
               "stop_reason": None, "required": None, "pauses": []}  # fmt: skip
    elapsed = max(0.0, min(float(TARGET_SECONDS), (now - started).total_seconds()))
    return (pk, pk, POLICY, 1, version, "response", "running", True, OWNERS[pk % 3],
            TEAMS[pk % 3], started, due, TARGET_SECONDS, elapsed, json.dumps(schedule), "[]",
            due, json.dumps(details), False, now)  # fmt: skip


async def load_cycles(
    url: str, count: int, due_of: Callable[[int], datetime], version: str, now: datetime
) -> float:
    """Empty the tables and COPY ``count`` leads with one open cycle each; returns seconds."""
    started = time.perf_counter()
    async with pg_connection(url) as connection:
        await connection.execute("TRUNCATE outbox, sla_cycles, leads RESTART IDENTITY CASCADE")
        step = 100_000
        for first in range(1, count + 1, step):
            ids = range(first, min(count, first + step - 1) + 1)
            await connection.copy_records_to_table(
                "leads", records=[lead_row(pk, now) for pk in ids], columns=LEAD_COLUMNS
            )
            await connection.copy_records_to_table(
                "sla_cycles",
                records=[cycle_row(pk, due_of(pk), version, now) for pk in ids],
                columns=CYCLE_COLUMNS,
            )
        for table in ("leads", "sla_cycles"):
            await connection.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {count})"
            )
        await connection.execute("VACUUM ANALYZE leads")
        await connection.execute("VACUUM ANALYZE sla_cycles")
        await connection.execute("VACUUM ANALYZE outbox")
        await connection.execute("CHECKPOINT")
    return time.perf_counter() - started


# --- the drain -----------------------------------------------------------------------------


async def run_service_sweep(url: str, batch_size: int, concurrency: int) -> dict[str, Any]:
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    from service.db import create_engine, session_factory
    from service.policies import PolicyStore
    from service.sweep import sweep

    policies = PolicyStore(None, {}).current
    engine = create_engine(url)
    sessions = session_factory(engine)
    # Each transaction's id is read just before it commits and timestamped just after, so every
    # outbox row (whose xmin is the id of the transaction that wrote it) gets its commit time.
    pending: dict[int, int] = {}
    committed_at: dict[int, float] = {}
    t0_wall = 0.0

    def before_commit(session: Session) -> None:
        xid = session.connection().exec_driver_sql("SELECT txid_current_if_assigned()").scalar()
        if xid is not None:
            pending[id(session)] = int(xid) % 2**32

    def after_commit(session: Session) -> None:
        xid = pending.pop(id(session), None)
        if xid is not None:
            committed_at[xid] = time.perf_counter() - t0_wall

    event.listen(Session, "before_commit", before_commit)
    event.listen(Session, "after_commit", after_commit)
    try:
        async with engine.connect() as connection:  # open the pool before the clock starts
            await connection.exec_driver_sql("SELECT 1")
        backends = await backend_cpu(url)
        cpu_before = time.process_time()
        t0 = datetime.now(UTC)
        t0_wall = time.perf_counter()
        fired = await sweep(sessions, t0, policies, batch_size=batch_size, concurrency=concurrency)
        elapsed = time.perf_counter() - t0_wall
        cpu = time.process_time() - cpu_before
        db_cpu = sum(t - backends.get(pid, 0.0) for pid, t in (await backend_cpu(url)).items())
    finally:
        event.remove(Session, "before_commit", before_commit)
        event.remove(Session, "after_commit", after_commit)
        await engine.dispose()
    per_transaction = await outbox_rows_by_transaction(url)
    lags = [committed_at[xid] for xid, rows in per_transaction for _ in range(rows)]
    return {
        "fired": fired,
        "seconds": elapsed,
        "fired_s": fired / elapsed if elapsed else 0.0,
        "lag_p50": percentile(lags, 0.50),
        "lag_p99": percentile(lags, 0.99),
        "lag_max": max(lags, default=0.0),
        "batches": len(per_transaction),
        "cpu_share": cpu / elapsed if elapsed else 0.0,
        "db_cpu_share": db_cpu / elapsed if elapsed else 0.0,
    }


async def outbox_rows_by_transaction(url: str) -> list[tuple[int, int]]:
    async with pg_connection(url) as connection:
        rows = await connection.fetch(
            "SELECT xmin::text::bigint, count(*) FROM outbox GROUP BY 1 ORDER BY 1"
        )
    return [(int(xid), int(count)) for xid, count in rows]


BASELINE_SQL = """
INSERT INTO outbox (key, cycle_id, type, channel, channel_type, recipient, payload, status,
                    attempts, next_attempt_at, created_at)
SELECT 'cycle-' || c.id || '-breach-0', c.id, 'sla.breached', 'log', 'log', c.owner,
       json_build_object(
         'type', 'sla.breached', 'id', 'cycle-' || c.id || '-breach-0',
         'occurred_at', c.due_at, 'policy', c.policy_id, 'cycle', c.number, 'late', true,
         'lead', json_build_object('source', l.source, 'id', l.external_id, 'owner', c.owner,
                                   'team', c.team, 'status', l.status),
         'sla', json_build_object('started_at', c.started_at, 'due_at', c.due_at,
                                  'state', 'breached',
                                  'elapsed_business_seconds', c.target_seconds,
                                  'remaining_business_seconds', 0, 'attempts', c.attempts)),
       'pending', 0, $1, $1
FROM sla_cycles c JOIN leads l ON l.id = c.lead_id
WHERE c.next_fire_at <= $1
ON CONFLICT (key) DO NOTHING
"""


async def run_baseline(url: str) -> dict[str, Any]:
    async with pg_connection(url) as connection:
        t0 = datetime.now(UTC)
        started = time.perf_counter()
        async with connection.transaction():
            status = await connection.execute(BASELINE_SQL, t0)
        elapsed = time.perf_counter() - started
    fired = int(status.split()[-1])
    return {"fired": fired, "seconds": elapsed, "fired_s": fired / elapsed if elapsed else 0.0}


async def outbox_count(url: str) -> int:
    async with pg_connection(url) as connection:
        return int(await connection.fetchval("SELECT count(*) FROM outbox"))


def drain(args: argparse.Namespace, version: str) -> None:
    url = args.database_url
    recreate_database(url)
    migrate(url)
    service_runs: list[dict[str, Any]] = []
    baseline_runs: list[dict[str, Any]] = []
    sides: list[tuple[str, Callable[[], Awaitable[dict[str, Any]]]]] = [
        ("baseline", lambda: run_baseline(url)),
        ("service", lambda: run_service_sweep(url, args.batch_size, args.concurrency)),
    ]
    for run in range(args.runs):
        for name, measure in sides if run % 2 == 0 else sides[::-1]:
            now = datetime.now(UTC)
            due_of = due_in_last_hours(args.cycles, now)
            loaded = asyncio.run(load_cycles(url, args.cycles, due_of, version, now))
            figures = asyncio.run(measure())
            stored = asyncio.run(outbox_count(url))
            (baseline_runs if name == "baseline" else service_runs).append(figures)
            line = f"{figures['fired_s']:10,.0f} fired/s ({figures['fired']} in "
            line += f"{figures['seconds']:.2f} s, {stored} outbox rows; loaded in {loaded:.0f} s"
            if name == "service":
                line += (
                    f"; lag p50 {figures['lag_p50']:.2f} s p99 {figures['lag_p99']:.2f} s, "
                    f"{figures['batches']} batches, CPU: sweep process {figures['cpu_share']:.0%}, "
                    f"PostgreSQL {figures['db_cpu_share']:.0%}"
                )
            print(f"   run {run + 1} {name:8}: {line})", flush=True)
    fired_s = median([r["fired_s"] for r in service_runs])
    base_s = median([r["fired_s"] for r in baseline_runs])
    lag_p99 = median([r["lag_p99"] for r in service_runs])
    print(f"   medians over {args.runs} runs (min–max):")
    print(f"   baseline: {spread([r['fired_s'] for r in baseline_runs])} rows/s")
    print(
        f"   service : {spread([r['fired_s'] for r in service_runs])} fired/s, lag p50 "
        f"{spread([r['lag_p50'] for r in service_runs])} s, p99 "
        f"{spread([r['lag_p99'] for r in service_runs])} s"
    )
    print(f"   ratio service/baseline: {fired_s / base_s if base_s else 0:.2f}")
    verdict = "met" if fired_s >= TARGET_FIRED_S else "MISSED"
    print(f"   target: >= {TARGET_FIRED_S:,} fired/s -> {fired_s:,.0f}, {verdict}")
    verdict = "met" if lag_p99 <= TARGET_LAG_P99 else "MISSED"
    print(f"   target: fire lag p99 <= {TARGET_LAG_P99:.0f} s -> {lag_p99:.2f} s, {verdict}")


# --- memory --------------------------------------------------------------------------------


async def schedule_ticks(
    url: str, start: datetime, seconds: float, per_second: int, open_cycles: int
) -> int:
    """Make a few cycles fall due every second from ``start``: next_fire_at and schedule agree,
    as ingest would leave them."""
    count = min(open_cycles, int(seconds * per_second))
    stride = open_cycles // count
    rows = []
    for i in range(count):
        due = start + timedelta(seconds=i / per_second)
        schedule = [{"step": "breach", "kind": "breach", "at": due.isoformat(),
                     "offset": float(TARGET_SECONDS)}]  # fmt: skip
        rows.append((1 + i * stride, due, json.dumps(schedule)))
    async with pg_connection(url) as connection:
        await connection.executemany(
            "UPDATE sla_cycles SET next_fire_at = $2, due_at = $2, schedule = $3::json "
            "WHERE id = $1",
            rows,
        )
    return count


def rss(args: argparse.Namespace, version: str) -> None:
    import psutil

    url = args.rss_database_url
    recreate_database(url)
    migrate(url)
    now = datetime.now(UTC)
    far = now + timedelta(days=1)

    def due_of(pk: int) -> datetime:  # spread over the next 30 days: open, not due
        return far + timedelta(seconds=(pk * 2.6) % (30 * 86_400))

    loaded = asyncio.run(load_cycles(url, args.rss_cycles, due_of, version, now))
    print(f"   {args.rss_cycles:,} open cycles loaded in {loaded:.0f} s")
    worker = start_service(url, "worker")
    try:
        process = psutil.Process(worker.pid)
        time.sleep(args.rss_settle)  # startup, first sweeps and the first gauge refresh
        before = process.memory_info().rss
        cpu_before = process_cpu(worker.pid)
        start = datetime.now(UTC) + timedelta(seconds=1)
        due = asyncio.run(
            schedule_ticks(url, start, args.rss_seconds, args.rss_per_second, args.rss_cycles)
        )
        samples = []
        deadline = time.monotonic() + args.rss_seconds + 3
        while time.monotonic() < deadline:
            time.sleep(1)
            samples.append(process.memory_info().rss)
        after = process.memory_info().rss
        cpu = process_cpu(worker.pid) - cpu_before
        fired, lag_p50, lag_p99 = asyncio.run(tick_lags(url))
    finally:
        worker.stop()
    mb = 1024 * 1024
    print(
        f"   worker RSS before {before / mb:.1f} MB, after {after / mb:.1f} MB "
        f"(change {(after - before) / mb:+.1f} MB), max {max(samples) / mb:.1f} MB over "
        f"{len(samples)} samples; {fired}/{due} due timers fired "
        f"(lag from due time to sweep p50 {lag_p50:.2f} s, p99 {lag_p99:.2f} s), "
        f"worker CPU {cpu / max(1, len(samples)):.0%}"
    )


async def tick_lags(url: str) -> tuple[int, float, float]:
    async with pg_connection(url) as connection:
        rows = await connection.fetch(
            "SELECT extract(epoch FROM o.created_at - c.due_at) FROM outbox o "
            "JOIN sla_cycles c ON c.id = o.cycle_id"
        )
    lags = [float(row[0]) for row in rows]
    return len(lags), percentile(lags, 0.5), percentile(lags, 0.99)


def due_in_last_hours(cycles: int, now: datetime) -> Callable[[int], datetime]:
    """Due times of the drain's cycles: between two hours and one hour before ``now``, oldest
    first by id."""
    oldest, spacing = now - timedelta(hours=2), 3600 / cycles
    return lambda pk: oldest + timedelta(seconds=pk * spacing)


def add_drain_arguments(parser: argparse.ArgumentParser, *, database: str, runs: int) -> None:
    """The options of a drain of cycles due at once (this script's and ``sweep_designs.py``'s)."""
    from service.config import Settings

    parser.add_argument(
        "--database-url",
        default=pg_url(database),
        help="PostgreSQL database of the benchmark's own (dropped and re-created)",
    )
    parser.add_argument("--cycles", type=int, default=100_000, help="cycles due at once")
    parser.add_argument("--runs", type=int, default=runs, help="runs of each side")
    parser.add_argument("--batch-size", type=int, default=1000, help="LEAD_SLA_SWEEP_BATCH_SIZE")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=Settings.model_fields["sweep_concurrency"].default,
        help="LEAD_SLA_SWEEP_CONCURRENCY: sweep transactions at once",
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_drain_arguments(parser, database="lead_sla_bench_sweep", runs=5)
    parser.add_argument("--no-drain", action="store_true", help="skip the drain")
    parser.add_argument("--no-rss", action="store_true", help="skip the memory run")
    parser.add_argument(
        "--rss-database-url",
        default=pg_url("lead_sla_bench_sweep_rss"),
        help="database for the memory run (dropped and re-created)",
    )
    parser.add_argument("--rss-cycles", type=int, default=1_000_000, help="open cycles")
    parser.add_argument("--rss-seconds", type=float, default=60.0, help="measured window")
    parser.add_argument("--rss-per-second", type=int, default=5, help="timers due per second")
    parser.add_argument("--rss-settle", type=float, default=20.0, help="seconds before 'before'")
    args = parser.parse_args()
    if args.database_url.startswith("sqlite"):
        parser.error("the sweep benchmark runs on PostgreSQL")
    if args.cycles > 2_000_000 or args.rss_cycles > 5_000_000 or args.rss_seconds > 600:
        parser.error("bounded: at most 2,000,000 due cycles, 5,000,000 open, 600 s")
    version = policy_version()
    print_header(
        "timer sweep",
        {
            "database": args.database_url,
            "drain": f"{args.cycles:,} cycles due at once, batch size {args.batch_size}, "
            f"concurrency {args.concurrency}, {args.runs} runs per side",
            "memory run": f"{args.rss_cycles:,} open cycles, {args.rss_per_second} due/s for "
            f"{args.rss_seconds:.0f} s",
        },
    )
    if not args.no_drain:
        drain(args, version)
    if not args.no_rss:
        rss(args, version)
    return 0


if __name__ == "__main__":
    sys.exit(main())
