"""Several workers over the same cycles: each step fires once and each notification is sent once.

On PostgreSQL workers share the work (``FOR UPDATE SKIP LOCKED``). On SQLite the documented
behaviour is one worker per database file: a second worker process refuses to start, while two
sweeps inside one process serialise on the write lock.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from service.clock import FrozenClock
from service.notify.dispatcher import dispatch
from service.runtime import Runtime, build_runtime
from service.sweep import sweep
from tests.conftest import PG_URL, Receiver
from tests.workers import (
    expected_keys,
    free_port,
    read_scalar,
    received_ids,
    seed_cycles,
    serving,
    start_worker,
    stop,
    wait_for,
    worker_settings,
    write_policy,
)

N = 500
BREACHED = "SELECT count(*) FROM outbox WHERE type = 'sla.breached'"
DELIVERED = "SELECT count(*) FROM outbox WHERE status = 'delivered'"


async def test_two_sweeps_and_dispatchers_at_once_fire_and_send_each_breach_once(
    database_url: str, receiver: Receiver, tmp_path: Path, clock: FrozenClock
) -> None:
    policy = write_policy(tmp_path)
    now = clock.now()
    await seed_cycles(database_url, policy, receiver, N, now, now + timedelta(minutes=5))
    settings = worker_settings(database_url, policy, receiver)
    one, two = build_runtime(settings, clock), build_runtime(settings, clock)
    try:
        clock.advance(minutes=6)

        async def sweep_with(runtime: Runtime) -> int:
            return await sweep(runtime.sessions, clock.now(), runtime.policies.current, 25)

        fired = await asyncio.gather(sweep_with(one), sweep_with(two))
        assert sum(fired) == N  # every breach fired by exactly one of them
        assert await read_scalar(database_url, BREACHED) == N
        assert await sweep_with(one) + await sweep_with(two) == 0

        async def dispatch_with(runtime: Runtime) -> int:
            return await dispatch(runtime.sessions, runtime.http, clock, runtime.policies.current,
                                  runtime.retry, 40, 10)  # fmt: skip

        attempted = 0
        for _ in range(N):
            rounds = await asyncio.gather(dispatch_with(one), dispatch_with(two))
            attempted += sum(rounds)
            if not any(rounds):
                break
        assert attempted == N
    finally:
        await one.close()
        await two.close()
    ids = received_ids(receiver)
    expected, _ = await expected_keys(database_url)
    assert len(ids) == N and set(ids) == expected
    assert await read_scalar(database_url, DELIVERED) == N


WORKER = {
    "LEAD_SLA_SWEEP_INTERVAL_SECONDS": "0.2",
    "LEAD_SLA_SWEEP_BATCH_SIZE": "25",
    "LEAD_SLA_DISPATCH_INTERVAL_SECONDS": "0.1",
    "LEAD_SLA_DISPATCH_BATCH_SIZE": "50",
    "LEAD_SLA_DISPATCH_CONCURRENCY": "10",
    # a delivery that fails on a loaded machine is retried within the test's time
    "LEAD_SLA_DELIVERY_BACKOFF_BASE_SECONDS": "0.2",
    "LEAD_SLA_DELIVERY_BACKOFF_MAX_SECONDS": "1",
}


@pytest.mark.slow
async def test_two_worker_processes(database_url: str, receiver: Receiver, tmp_path: Path) -> None:
    policy = write_policy(tmp_path)
    now = datetime.now(UTC)
    await seed_cycles(database_url, policy, receiver, N, now - timedelta(seconds=30),
                      now + timedelta(seconds=4))  # fmt: skip
    expected, _ = await expected_keys(database_url)
    ports = [free_port(), free_port()]
    first = start_worker(database_url, policy, receiver, tmp_path, WORKER, ports[0])
    second = None
    try:
        await wait_for(lambda: serving(ports[0]) or first.poll() is not None, 30, "a worker")
        assert first.poll() is None
        second = start_worker(database_url, policy, receiver, tmp_path, WORKER, ports[1])
        if PG_URL:
            await wait_for(lambda: serving(ports[1]) or second.poll() is not None, 30, "worker 2")
            assert second.poll() is None  # PostgreSQL: any number of workers
        else:
            _, err = second.communicate(timeout=30)
            assert second.returncode == 2  # SQLite: one worker per file, the second refuses
            assert "SQLite mode supports one worker" in err.decode()
        await wait_for(lambda: len(set(received_ids(receiver))) >= N, 60, "every breach")

        async def recorded() -> bool:
            return await read_scalar(database_url, DELIVERED) == N

        await wait_for(recorded, 10, "every delivery recorded")
        assert first.poll() is None
        if PG_URL:
            assert second.poll() is None
    finally:
        stop(first)
        if second is not None:
            stop(second)
    ids = received_ids(receiver)
    assert set(ids) == expected
    assert await read_scalar(database_url, BREACHED) == N
    assert [key for key, n in Counter(ids).items() if n > 1] == []  # nobody crashed: no repeats
