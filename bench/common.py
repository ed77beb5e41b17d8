"""Shared pieces of the benchmark scripts: databases, servers on loopback, the load generator
process, and the statistics they print.

Not a script of its own; ``ingest_single.py``, ``ingest_batch.py`` and ``sweep.py`` import it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url

BENCH = Path(__file__).resolve().parent
PG_SERVER = "postgresql+asyncpg://postgres@127.0.0.1:5432"
SECRET = "whsec_" + base64.b64encode(b"lead-sla-bench-secret-0123456789").decode()
PROTECTED_DATABASES = frozenset({"test", "postgres", "template0", "template1"})


def pg_url(name: str) -> str:
    return f"{PG_SERVER}/{name}"


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@contextlib.asynccontextmanager
async def pg_connection(url: str) -> AsyncIterator[Any]:
    """A plain asyncpg connection to the database of a SQLAlchemy URL, closed on exit."""
    import asyncpg

    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        yield connection
    finally:
        await connection.close()


# --- databases -----------------------------------------------------------------------------


_LOCKS: dict[str, Any] = {}  # lock file handles held, by database URL


def claim_database(url: str) -> None:
    """Hold an exclusive lock on the benchmark database for this process's lifetime, so two
    benchmarks never drop each other's database mid-run."""
    import fcntl

    if url in _LOCKS:  # this process holds it already
        return
    name = "".join(c if c.isalnum() else "_" for c in url)[-120:]
    handle = (Path(tempfile.gettempdir()) / f"lead-sla-bench-{name}.lock").open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(f"another benchmark is using {url}; wait for it or pick another") from None
    _LOCKS[url] = handle


def recreate_database(url: str) -> None:
    """Drop and create the benchmark's own database (or delete the SQLite file)."""
    claim_database(url)
    parsed = make_url(url)
    if is_sqlite(url):
        path = Path(parsed.database or "")
        for suffix in ("", "-wal", "-shm", ".worker.lock"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    name = parsed.database or ""
    if name in PROTECTED_DATABASES or not name:
        raise SystemExit(f"refusing to drop database {name!r}: give a benchmark database")
    asyncio.run(_recreate_pg(url, name))


async def _recreate_pg(url: str, name: str) -> None:
    admin = make_url(url).set(database="postgres")
    async with pg_connection(admin.render_as_string(hide_password=False)) as connection:
        await connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await connection.execute(f'CREATE DATABASE "{name}"')


def migrate(url: str) -> None:
    """``lead-sla migrate`` against the benchmark database."""
    subprocess.run(
        [sys.executable, "-m", "service", "migrate"],
        env=service_env(url),
        cwd=WORKDIR,
        check=True,
        stdout=subprocess.DEVNULL,
    )


async def truncate_all(url: str) -> None:
    """Empty every table but Alembic's between runs, so every run starts from the same state."""
    if is_sqlite(url):
        import aiosqlite

        async with aiosqlite.connect(make_url(url).database or "") as db:
            listed = await db.execute_fetchall(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT IN ('alembic_version', 'sqlite_sequence')"
            )
            for (table,) in listed:
                await db.execute(f"DELETE FROM {table}")
            await db.commit()
            await db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return
    async with pg_connection(url) as connection:
        tables = await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> 'alembic_version'"
        )
        names = ", ".join(f'"{row[0]}"' for row in tables)
        await connection.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
        await connection.execute("CHECKPOINT")


async def analyze(url: str) -> None:
    """Planner statistics for the tables' current contents. A run starts on emptied tables,
    whose statistics say "empty" until autovacuum catches up, which in a running deployment
    it long has; without this the first seconds of every run measure plans made for empty
    tables."""
    if is_sqlite(url):
        import aiosqlite

        async with aiosqlite.connect(make_url(url).database or "") as db:
            await db.execute("ANALYZE")
        return
    async with pg_connection(url) as connection:
        await connection.execute("ANALYZE")


# --- processes -------------------------------------------------------------------------------

# Servers run in an empty directory so that no stray ``.env`` changes their settings.
WORKDIR = tempfile.mkdtemp(prefix="lead-sla-bench-")


def service_env(url: str, **settings: str) -> dict[str, str]:
    """The environment of a service process: ours minus any ``LEAD_SLA_*``, plus the bench's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEAD_SLA_")}
    env.update(
        LEAD_SLA_DATABASE_URL=url,
        LEAD_SLA_WEBHOOK_SECRET_GENERIC=SECRET,
        LEAD_SLA_LOG_LEVEL="warning",
    )
    env.update({f"LEAD_SLA_{k.upper()}": v for k, v in settings.items()})
    return env


def process_cpu(pid: int) -> float:
    """User + system CPU seconds a process and its worker processes have used so far."""
    import psutil

    parent = psutil.Process(pid)
    total = 0.0
    for process in [parent, *parent.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


async def backend_cpu(url: str) -> dict[int, float]:
    """CPU seconds used so far by each PostgreSQL backend connected to the benchmark database
    (pooled connections live across a run, so the difference over a run is the database's
    work for it; backends that come and go within the run are not counted)."""
    if is_sqlite(url):
        return {}
    import psutil

    async with pg_connection(url) as connection:
        rows = await connection.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
    used: dict[int, float] = {}
    for (pid,) in rows:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            used[pid] = float(times.user + times.system)
    return used


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A server process on a loopback port, started and stopped by the benchmark."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int) -> None:
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}"
        self.log = Path(WORKDIR) / f"{name}-{port}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                argv, env=env, cwd=WORKDIR, stdout=log, stderr=subprocess.STDOUT
            )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited early:\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.2)
        self.stop()
        raise SystemExit(f"{self.name} did not answer /healthz within {timeout}s")

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_service(url: str, role: str = "api", workers: int = 1, **settings: str) -> Server:
    """``lead-sla serve --role <role> --skip-migrations`` on a free loopback port."""
    port = free_port()
    argv = [sys.executable, "-m", "service", "serve", "--role", role, "--skip-migrations"]
    argv += ["--workers", str(workers)]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    env = service_env(url, public_url=f"http://127.0.0.1:{port}", **settings)
    return Server(f"service-{role}", argv, env, port)


def start_baseline(url: str, pool_size: int = 20, workers: int = 1) -> Server:
    """The minimal FastAPI endpoint of ``baseline_server.py`` on a free loopback port."""
    port = free_port()
    argv = [sys.executable, str(BENCH / "baseline_server.py"), "--database-url", url]
    argv += ["--port", str(port), "--pool-size", str(pool_size), "--workers", str(workers)]
    return Server("baseline", argv, service_env(url), port)


def run_loadgen(
    url: str,
    *,
    mode: str,
    requests: int,
    concurrency: int,
    prefix: str,
    batch_size: int = 1,
    max_seconds: float = 60.0,
    warmup: int = 0,
    path: str = "/webhooks/generic",
) -> dict[str, Any]:
    """Run ``loadgen.py`` as its own process and return its figures."""
    argv = [sys.executable, str(BENCH / "loadgen.py"), "--url", url + path, "--mode", mode]
    argv += ["--requests", str(requests), "--concurrency", str(concurrency)]
    argv += ["--prefix", prefix, "--batch-size", str(batch_size)]
    argv += ["--max-seconds", str(max_seconds), "--warmup", str(warmup), "--json"]
    done = subprocess.run(
        argv, env=service_env(""), cwd=WORKDIR, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"loadgen failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# --- figures -------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (0 for an empty sample)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return float(ordered[rank])


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def spread(values: Sequence[float]) -> str:
    """``median (min–max)`` of a figure over runs."""
    if not values:
        return "-"
    return f"{median(values):,.1f} ({min(values):,.1f}–{max(values):,.1f})"


def machine_facts() -> dict[str, str]:
    free = shutil.which("free")
    memory = subprocess.run([free, "-h"], capture_output=True, text=True).stdout if free else ""
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "memory": " ".join(memory.splitlines()[1].split()) if len(memory.splitlines()) > 1 else "",
        "service": service_revision(),
    }


def service_revision() -> str:
    """The commit the service was measured at, and whether ``service/`` had local changes."""
    git = shutil.which("git")
    if git is None:
        return "unknown"
    root = BENCH.parent
    head = subprocess.run(
        [git, "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        [git, "-C", str(root), "status", "--porcelain", "--", "service"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"{head or 'unknown'}{' + local changes in service/' if dirty else ''}"


def print_header(title: str, details: dict[str, Any]) -> None:
    print(f"== {title}")
    for key, value in {**machine_facts(), **details}.items():
        print(f"   {key}: {value}")


# --- the ingest comparison (ingest_single.py, ingest_batch.py) ------------------------------


def add_ingest_arguments(
    parser: argparse.ArgumentParser, *, requests: int, concurrency: int, warmup: int
) -> None:
    parser.add_argument(
        "--database-url",
        default=pg_url("lead_sla_bench_ingest"),
        help="a database of the benchmark's own: it is dropped and re-created "
        "(default %(default)s; sqlite+aiosqlite:///PATH for SQLite)",
    )
    parser.add_argument("--runs", type=int, default=5, help="timed runs per side (default 5)")
    parser.add_argument("--requests", type=int, default=requests, help="requests per run")
    parser.add_argument("--concurrency", type=int, default=concurrency, help="connections")
    parser.add_argument("--warmup", type=int, default=warmup, help="untimed requests per run")
    parser.add_argument(
        "--max-seconds", type=float, default=90.0, help="cap per run (default %(default)s)"
    )
    parser.add_argument(
        "--pool-size", type=int, default=20, help="LEAD_SLA_DB_POOL_SIZE, both sides (%(default)s)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="server processes per side (default %(default)s)"
    )
    parser.add_argument(
        "--no-ceiling", action="store_true", help="skip measuring the load generator's ceiling"
    )


def compare_ingest(
    args: argparse.Namespace, *, mode: str, batch_size: int
) -> dict[str, list[dict[str, Any]]]:
    """Serve the service and the baseline side by side and load them in alternating order."""
    url = args.database_url
    recreate_database(url)
    migrate(url)
    results: dict[str, list[dict[str, Any]]] = {"baseline": [], "service": [], "ceiling": []}
    with contextlib.ExitStack() as stack:
        service = start_service(url, "api", args.workers, db_pool_size=str(args.pool_size))
        stack.callback(service.stop)
        baseline = start_baseline(url, args.pool_size, args.workers)
        stack.callback(baseline.stop)
        load = {
            "mode": mode,
            "requests": args.requests,
            "concurrency": args.concurrency,
            "batch_size": batch_size,
            "max_seconds": args.max_seconds,
        }
        if not args.no_ceiling:
            figures = run_loadgen(
                baseline.url, prefix="ceiling", path="/noop", warmup=args.warmup, **load
            )
            results["ceiling"].append(figures)
            print(
                f"   load generator ceiling (POST /noop, same bodies, no database): "
                f"{figures['req_s']:,.1f} req/s, p50 {figures['p50_ms']:.1f} ms, "
                f"p99 {figures['p99_ms']:.1f} ms, client CPU {figures['client_cpu_share']:.0%}"
            )
        sides = [("baseline", baseline), ("service", service)]
        for run in range(args.runs):
            for name, server in sides if run % 2 == 0 else sides[::-1]:
                asyncio.run(truncate_all(url))
                if args.warmup:  # then statistics, as autovacuum keeps them in a running system
                    run_loadgen(
                        server.url, prefix=f"W{run}{name[0]}", **{**load, "requests": args.warmup}
                    )
                    asyncio.run(analyze(url))
                before = process_cpu(server.pid)
                backends = asyncio.run(backend_cpu(url))
                figures = run_loadgen(server.url, prefix=f"R{run}{name[0]}", **load)
                done = max(1, figures["requests"])
                figures["server_cpu_ms"] = 1000 * (process_cpu(server.pid) - before) / done
                if not is_sqlite(url):
                    after = asyncio.run(backend_cpu(url))
                    used = sum(cpu - backends.get(pid, 0.0) for pid, cpu in after.items())
                    figures["db_cpu_ms"] = 1000 * used / done
                results[name].append(figures)
                print(f"   run {run + 1} {name:8}: {_line(figures)}", flush=True)
    return results


def _line(figures: dict[str, Any]) -> str:
    errors = {k: v for k, v in figures["statuses"].items() if k != "202"}
    capped = ", stopped at --max-seconds" if figures["requests"] < figures["planned"] else ""
    return (
        f"{figures['req_s']:8,.1f} req/s {figures['events_s']:9,.1f} events/s  "
        f"p50 {figures['p50_ms']:7.1f} ms  p99 {figures['p99_ms']:7.1f} ms  "
        f"({figures['requests']} requests in {figures['seconds']:.1f} s, "
        f"CPU/request: server {figures.get('server_cpu_ms', 0):.1f} ms, "
        + (f"PostgreSQL {figures['db_cpu_ms']:.1f} ms, " if "db_cpu_ms" in figures else "")
        + f"client CPU {figures['client_cpu_share']:.0%}"
        + capped
        + (f", NON-202: {errors}" if errors else "")
        + ")"
    )


def summarize_ingest(
    results: dict[str, list[dict[str, Any]]], figure: str, unit: str
) -> tuple[float, float]:
    """Print medians of each side and the service/baseline ratio; return (service, ratio)."""
    print(f"   medians over {len(results['service'])} runs (min–max):")
    for name in ("baseline", "service"):
        runs = results[name]
        print(
            f"   {name:8}: {spread([r[figure] for r in runs])} {unit}, "
            f"p50 {spread([r['p50_ms'] for r in runs])} ms, "
            f"p99 {spread([r['p99_ms'] for r in runs])} ms"
        )
    service = median([r[figure] for r in results["service"]])
    base = median([r[figure] for r in results["baseline"]])
    pairs = [
        s[figure] / b[figure]
        for s, b in zip(results["service"], results["baseline"], strict=True)
        if b[figure]
    ]
    ratio = service / base if base else 0.0
    print(
        f"   ratio service/baseline: {ratio:.2f} (of medians); per-run pairs: "
        + ", ".join(f"{p:.2f}" for p in pairs)
    )
    return service, ratio
