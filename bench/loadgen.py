"""Load generator: signed generic-format webhooks over N concurrent loopback connections.

Every request is built and signed before the clock starts, so the timed phase only sends. The
traffic is a realistic lead story spread so that no two requests in flight touch the same lead:
event ``i`` of a run belongs to lead ``i % L`` (``L`` = a third of the events) and is that
lead's ``lead.created`` (first third), its move to ``mql`` (second third, which starts SLA
clocks) or its first call (last third, which stops the first-touch clock).

    python bench/loadgen.py --url http://127.0.0.1:8000/webhooks/generic --requests 2000

Prints requests/s, events/s and latency percentiles (``--json`` for one machine-readable line).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys
import time
import types
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any


def _answer_sniffio() -> None:
    """httpcore asks ``sniffio`` which event loop runs on every request; when sniffio is not
    installed each ask is a failed import that walks ``sys.path``. This process only runs
    asyncio, so it answers directly and keeps the client's own cost off the figures."""
    try:
        import sniffio  # noqa: F401
    except ImportError:
        module = types.ModuleType("sniffio")
        module.current_async_library = lambda: "asyncio"  # type: ignore[attr-defined]
        sys.modules["sniffio"] = module


_answer_sniffio()

import httpx  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SECRET, percentile  # noqa: E402

from service.crm import signatures  # noqa: E402

TEAMS = ("emea", "latam", "na")
OWNERS = ("rep-1", "rep-2", "rep-3")


def lead_events(prefix: str, total: int, now: datetime) -> list[dict[str, Any]]:
    """``total`` events: created, then mql, then a call, for ``ceil(total / 3)`` leads."""
    leads = max(1, -(-total // 3))
    base = now - timedelta(minutes=30)
    events = []
    for i in range(total):
        lead_no, stage = i % leads, i // leads
        lead_id = f"{prefix}-{lead_no}"
        at = (base + timedelta(minutes=5 * stage, milliseconds=lead_no)).isoformat()
        if stage == 0:
            lead = {
                "id": lead_id,
                "owner": OWNERS[lead_no % 3],
                "team": TEAMS[lead_no % 3],
                "email": f"{lead_id.lower()}@example.com",
                "source": "webinar",
                "priority": "normal",
                "country": "BR",
            }
            event = {"type": "lead.created", "lead": lead, "status": {"to": "new"}}
        elif stage == 1:
            status = {"from": "new", "to": "mql", "reason": "score>=80"}
            event = {"type": "lead.status_changed", "lead": {"id": lead_id}, "status": status}
        else:
            activity = {"kind": "call", "outcome": "connected", "by": OWNERS[lead_no % 3]}
            event = {"type": "lead.activity", "lead": {"id": lead_id}, "activity": activity}
        events.append({"event_id": f"{lead_id}-{stage}", "occurred_at": at, **event})
    return events


def build_requests(
    prefix: str, requests: int, batch_size: int, mode: str, secret: str
) -> list[tuple[bytes, dict[str, str]]]:
    now = datetime.now(UTC)
    events = lead_events(prefix, requests * batch_size, now)
    built = []
    timestamp = int(now.timestamp())
    for index in range(requests):
        part = events[index * batch_size : (index + 1) * batch_size]
        payload: Any = part[0] if mode == "single" else {"events": part}
        body = json.dumps(payload, separators=(",", ":")).encode()
        message_id = f"msg_{prefix}_{index}"
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signatures.sign(secret, message_id, timestamp, body),
        }
        built.append((body, headers))
    return built


async def send_all(
    clients: list[httpx.AsyncClient],
    url: str,
    prepared: list[tuple[bytes, dict[str, str]]],
    concurrency: int,
    max_seconds: float,
) -> tuple[list[float], Counter[int], int, float]:
    """Send everything over ``concurrency`` workers; stop early at ``max_seconds``."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    accepted = 0
    queue = iter(prepared)
    started = time.perf_counter()
    deadline = started + max_seconds

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal accepted
        for body, headers in queue:
            if time.perf_counter() > deadline:
                return
            sent = time.perf_counter()
            try:
                response = await client.post(url, content=body, headers=headers)
            except httpx.HTTPError:
                statuses[0] += 1
                continue
            latencies.append(time.perf_counter() - sent)
            statuses[response.status_code] += 1
            if response.status_code == 202:
                accepted += int(response.json().get("accepted", 0))

    await asyncio.gather(*(worker(client) for client in clients[:concurrency]))
    return latencies, statuses, accepted, time.perf_counter() - started


async def run(args: argparse.Namespace) -> dict[str, Any]:
    # One client of one keep-alive connection per worker: httpx's shared pool scans every
    # connection on each request, which at 32 connections costs more CPU than the request.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(limits=limits, timeout=60.0))
            for _ in range(args.concurrency)
        ]
        if args.warmup:
            warm = build_requests(
                f"{args.prefix}-warm", args.warmup, args.batch_size, args.mode, args.secret
            )
            await send_all(clients, args.url, warm, args.concurrency, args.max_seconds)
        prepared = build_requests(
            args.prefix, args.requests, args.batch_size, args.mode, args.secret
        )
        cpu_before = resource.getrusage(resource.RUSAGE_SELF)
        latencies, statuses, accepted, elapsed = await send_all(
            clients, args.url, prepared, args.concurrency, args.max_seconds
        )
        cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    completed = sum(statuses.values())
    client_cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (
        cpu_after.ru_stime - cpu_before.ru_stime
    )
    return {
        "planned": args.requests,
        "requests": completed,
        "ok": statuses.get(202, 0),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "accepted_events": accepted,
        "seconds": elapsed,
        "req_s": completed / elapsed if elapsed else 0.0,
        "events_s": accepted / elapsed if elapsed else 0.0,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p90_ms": percentile(latencies, 0.90) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "client_cpu_share": client_cpu / elapsed if elapsed else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--url", required=True, help="full URL, loopback only")
    parser.add_argument("--mode", choices=("single", "batch"), default="single")
    parser.add_argument("--requests", type=int, default=2000, help="timed requests (bounded)")
    parser.add_argument("--batch-size", type=int, default=1, help="events per request (batch)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent connections")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="stop sending after this")
    parser.add_argument("--warmup", type=int, default=0, help="untimed requests sent first")
    parser.add_argument("--prefix", default=f"B{uuid.uuid4().hex[:8]}", help="lead id prefix")
    parser.add_argument("--secret", default=SECRET, help="the server's generic webhook secret")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()
    host = httpx.URL(args.url).host
    if host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("load targets loopback only")
    if args.requests > 1_000_000 or args.max_seconds > 600:
        parser.error("bounded: at most 1,000,000 requests and 600 s")
    if args.mode == "single":
        args.batch_size = 1
    try:
        import uvloop
    except ImportError:
        figures = asyncio.run(run(args))
    else:
        figures = uvloop.run(run(args))
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key}: {value:,.2f}" if isinstance(value, float) else f"{key}: {value}")
    return 0 if args.json or figures["ok"] == figures["requests"] else 1


if __name__ == "__main__":
    sys.exit(main())
