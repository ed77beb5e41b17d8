"""A real worker process killed with SIGKILL in the middle of its work, then started again:
every due notification is delivered, each outbox row exists once, and the only duplicates are
deliveries that were in flight at the kill (at-least-once, deduped by ``webhook-id``)."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import Receiver
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
    write_policy,
)

pytestmark = pytest.mark.slow
LEADS = 2000
DISPATCH_BATCH = 100
FAST_WORKER = {
    "LEAD_SLA_SWEEP_INTERVAL_SECONDS": "0.2",
    "LEAD_SLA_SWEEP_BATCH_SIZE": "100",
    "LEAD_SLA_DISPATCH_INTERVAL_SECONDS": "0.05",
    "LEAD_SLA_DISPATCH_BATCH_SIZE": str(DISPATCH_BATCH),
    "LEAD_SLA_DISPATCH_CONCURRENCY": "10",
    # a delivery that fails on a loaded machine is retried within the test's time
    "LEAD_SLA_DELIVERY_BACKOFF_BASE_SECONDS": "0.2",
    "LEAD_SLA_DELIVERY_BACKOFF_MAX_SECONDS": "1",
    "LEAD_SLA_LEASE_SECONDS": "3",  # rows leased by the killed worker come back quickly
}
UNFIRED = "SELECT count(*) FROM sla_cycles WHERE next_fire_at IS NOT NULL"
DELIVERING = "SELECT count(*) FROM outbox WHERE status = 'delivering'"
DELIVERED = "SELECT count(*) FROM outbox WHERE status = 'delivered'"
RETRYING = "SELECT count(*) FROM outbox WHERE status = 'pending' AND attempts > 0"


async def test_sigkill_mid_sweep_then_restart_delivers_every_notification(
    database_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    policy = write_policy(tmp_path)
    now = datetime.now(UTC)
    # Half the deadlines passed long ago (a backlog), the rest fall due over the next seconds,
    # so the sweep is still firing when the worker is killed.
    await seed_cycles(database_url, policy, receiver, LEADS, now - timedelta(hours=1),
                      now + timedelta(seconds=12))  # fmt: skip
    expected, outbox = await expected_keys(database_url)
    assert len(expected) == LEADS and outbox == []

    first = start_worker(database_url, policy, receiver, tmp_path, FAST_WORKER)
    try:
        await wait_for(lambda: bool(receiver.requests) or first.poll() is not None, 30,
                       "the first deliveries")  # fmt: skip
        assert first.poll() is None, first.communicate()[1].decode()
        first.send_signal(signal.SIGKILL)
        assert first.wait(10) == -signal.SIGKILL
    finally:
        stop(first)
    # Requests the killed worker had already written may still sit in the receiver's socket:
    # let it read them before taking stock of what arrived before the kill.
    await asyncio.sleep(0.5)
    seen_before_kill = set(received_ids(receiver))
    assert await read_scalar(database_url, DELIVERING) <= DISPATCH_BATCH
    # the premise: the kill interrupted both the sweep and the deliveries
    assert await read_scalar(database_url, UNFIRED) > 0
    assert len(seen_before_kill) < len(expected)

    second = start_worker(database_url, policy, receiver, tmp_path, FAST_WORKER)
    try:

        async def all_recorded() -> bool:
            return await read_scalar(database_url, DELIVERED) == len(expected)

        async def progress() -> object:
            missing = len(expected - set(received_ids(receiver)))
            return {"missing": missing, "worker exit": second.poll(),
                    "delivering": await read_scalar(database_url, DELIVERING),
                    "retrying": await read_scalar(database_url, RETRYING),
                    "unfired": await read_scalar(database_url, UNFIRED)}  # fmt: skip

        await wait_for(lambda: set(received_ids(receiver)) >= expected, 60,
                       "every notification to arrive", progress)  # fmt: skip
        await wait_for(all_recorded, 10, "every outbox row to be marked delivered")
        assert second.poll() is None
    finally:
        stop(second)

    ids = received_ids(receiver)
    assert set(ids) == expected
    _, outbox = await expected_keys(database_url)
    assert sorted(row.key for row in outbox) == sorted(expected)  # one row per cycle/step/recipient
    assert {row.status for row in outbox} == {"delivered"}
    assert await read_scalar(database_url, UNFIRED) == 0
    duplicated = {key: n for key, n in Counter(ids).items() if n > 1}
    assert sum(n - 1 for n in duplicated.values()) <= DISPATCH_BATCH
    assert set(duplicated) <= seen_before_kill  # only what the killed worker had in flight


async def test_a_second_worker_on_the_same_sqlite_file_refuses_to_start(
    receiver: Receiver, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'solo.db'}"
    policy = write_policy(tmp_path)
    port = free_port()
    first = start_worker(url, policy, receiver, tmp_path, port=port)
    try:
        await wait_for(lambda: serving(port) or first.poll() is not None, 30, "the first worker")
        assert first.poll() is None
        second = start_worker(url, policy, receiver, tmp_path)
        try:
            _, err = second.communicate(timeout=30)
        finally:
            stop(second)
        assert second.returncode == 2
        message = err.decode()
        assert "already runs" in message and "one worker" in message, message
        assert f"pid {first.pid}" in message
        assert first.poll() is None and serving(port)  # the first one is unharmed
    finally:
        stop(first)
