"""The outbox dispatcher against a real loopback receiver: backoff, Retry-After, dead rows,
leases, and the notification metrics."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from service.clock import FrozenClock
from service.config import Settings
from service.failure_streaks import FailureStreak
from service.models import OutboxMessage
from service.notify import dispatcher
from service.notify.channels import Delivery, Message
from service.notify.dispatcher import dispatch
from service.runtime import Runtime
from service.sweep import sweep
from tests.conftest import Receiver
from tests.helpers import post_events, status
from tests.store import rows, running_app, sample

NOTIFICATIONS = "lead_sla_notifications_total"


@pytest.fixture
def runtime(app: FastAPI) -> Runtime:
    result: Runtime = app.state.runtime
    return result


def outcomes(channel: str = "webhook") -> dict[str, float]:
    return {
        outcome: sample(NOTIFICATIONS, channel=channel, outcome=outcome)
        for outcome in ("delivered", "retried", "dead")
    }


def delta(before: dict[str, float], channel: str = "webhook") -> dict[str, float]:
    after = outcomes(channel)
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


async def run_dispatch(runtime: Runtime, http: httpx.AsyncClient | None = None) -> int:
    return await dispatch(runtime.sessions, http or runtime.http, runtime.clock,
                          runtime.policies.current, runtime.retry)  # fmt: skip


async def one_reminder(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime
) -> OutboxMessage:
    """A single pending webhook row: the 50% reminder of a 1h first-touch clock."""
    await post_events(client, clock.now(), status("e1", "L-1", clock.now(), "mql", owner="rep-7"))
    clock.advance(minutes=31)
    assert await sweep(runtime.sessions, clock.now(), runtime.policies.current) == 1
    (row,) = await rows(runtime, OutboxMessage)
    assert (row.type, row.status, row.attempts, row.channel_type) == (
        "sla.reminder", "pending", 0, "webhook",
    )  # fmt: skip
    return row


async def the_row(runtime: Runtime) -> OutboxMessage:
    (row,) = await rows(runtime, OutboxMessage)
    return row


async def test_500_is_retried_with_growing_backoff_then_delivered(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime, receiver: Receiver
) -> None:
    await one_reminder(client, clock, runtime)
    before = outcomes()
    receiver.responses = [(500, {}), (503, {})]
    base = runtime.settings.delivery_backoff_base_seconds

    assert await run_dispatch(runtime) == 1
    row = await the_row(runtime)
    first_wait = (row.next_attempt_at - clock.now()).total_seconds()
    assert (row.status, row.attempts, row.last_error) == ("pending", 1, "HTTP 500")
    assert base / 2 <= first_wait <= base
    assert await run_dispatch(runtime) == 0  # not yet due
    assert len(receiver.requests) == 1

    clock.set(row.next_attempt_at)
    assert await run_dispatch(runtime) == 1
    row = await the_row(runtime)
    second_wait = (row.next_attempt_at - clock.now()).total_seconds()
    assert (row.status, row.attempts, row.last_error) == ("pending", 2, "HTTP 503")
    assert base <= second_wait <= 2 * base

    clock.set(row.next_attempt_at)
    assert await run_dispatch(runtime) == 1
    row = await the_row(runtime)
    assert (row.status, row.attempts, row.last_error) == ("delivered", 3, None)
    assert row.delivered_at == clock.now()
    assert delta(before) == {"retried": 2, "delivered": 1}
    # every attempt carried the same idempotency key, so the receiver can dedupe
    assert {r["headers"]["webhook-id"] for r in receiver.requests} == {row.key}
    clock.advance(hours=1)
    assert await run_dispatch(runtime) == 0
    assert len(receiver.requests) == 3


@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_retry_after_is_honoured(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime, receiver: Receiver, form: str
) -> None:
    await one_reminder(client, clock, runtime)
    wait = timedelta(seconds=120)
    value = "120" if form == "seconds" else format_datetime(clock.now() + wait, usegmt=True)
    receiver.responses = [(429, {"Retry-After": value})]
    await run_dispatch(runtime)
    row = await the_row(runtime)
    assert (row.status, row.next_attempt_at) == ("pending", clock.now() + wait)
    clock.advance(seconds=119)
    assert await run_dispatch(runtime) == 0
    clock.advance(seconds=1)
    assert await run_dispatch(runtime) == 1
    assert (await the_row(runtime)).status == "delivered"


async def test_retry_after_is_capped_by_the_longest_backoff(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime, receiver: Receiver
) -> None:
    await one_reminder(client, clock, runtime)
    receiver.responses = [(503, {"Retry-After": "9999999"})]
    await run_dispatch(runtime)
    row = await the_row(runtime)
    cap = runtime.settings.delivery_backoff_max_seconds
    assert row.next_attempt_at == clock.now() + timedelta(seconds=cap)


async def test_dead_after_the_last_attempt(
    settings: Settings, clock: FrozenClock, receiver: Receiver
) -> None:
    async with running_app(settings, clock, delivery_max_attempts=3) as (app, client):
        runtime: Runtime = app.state.runtime
        await one_reminder(client, clock, runtime)
        before = outcomes()
        receiver.responses = [(500, {})] * 5
        for _ in range(3):
            assert await run_dispatch(runtime) == 1
            clock.advance(hours=1)
        row = await the_row(runtime)
        assert (row.status, row.attempts, row.last_error) == ("dead", 3, "HTTP 500")
        assert row.lease_until is None
        assert delta(before) == {"retried": 2, "dead": 1}
        clock.advance(days=1)
        assert await run_dispatch(runtime) == 0
        assert len(receiver.requests) == 3


async def test_410_gone_is_dead_at_once(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime, receiver: Receiver
) -> None:
    await one_reminder(client, clock, runtime)
    before = outcomes()
    receiver.responses = [(410, {})]
    await run_dispatch(runtime)
    row = await the_row(runtime)
    assert (row.status, row.attempts, row.last_error) == ("dead", 1, "HTTP 410")
    assert delta(before) == {"dead": 1}
    clock.advance(days=1)
    assert await run_dispatch(runtime) == 0


async def test_unreachable_receiver_is_retried(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime, receiver: Receiver
) -> None:
    await one_reminder(client, clock, runtime)
    before = outcomes()
    receiver.close()  # connection refused from now on
    await run_dispatch(runtime)
    row = await the_row(runtime)
    assert (row.status, row.attempts) == ("pending", 1)
    assert row.last_error and "ConnectError" in row.last_error
    assert delta(before) == {"retried": 1}


async def test_a_leased_row_is_left_alone_until_the_lease_expires(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime, receiver: Receiver
) -> None:
    """Worker A claims the row and hangs mid-delivery. Worker B does not touch the row while
    A's lease holds; once it expires B re-claims and delivers it, and A's late outcome is
    discarded instead of overwriting B's."""
    await one_reminder(client, clock, runtime)
    before = outcomes()
    entered, release = asyncio.Event(), asyncio.Event()

    async def hanging(request: httpx.Request) -> httpx.Response:
        entered.set()
        await release.wait()
        return httpx.Response(500)

    async with httpx.AsyncClient(transport=httpx.MockTransport(hanging)) as stuck_http:
        worker_a = asyncio.create_task(run_dispatch(runtime, stuck_http))
        await asyncio.wait_for(entered.wait(), 5)
        row = await the_row(runtime)
        lease = timedelta(seconds=runtime.settings.lease_seconds)
        assert (row.status, row.attempts, row.lease_until) == ("delivering", 1,
                                                               clock.now() + lease)  # fmt: skip

        assert await run_dispatch(runtime) == 0  # worker B: the lease is valid
        clock.advance(seconds=runtime.settings.lease_seconds - 1)
        assert await run_dispatch(runtime) == 0
        assert receiver.requests == []

        clock.advance(seconds=2)  # the lease has expired: A is presumed dead
        assert await run_dispatch(runtime) == 1
        row = await the_row(runtime)
        assert (row.status, row.attempts) == ("delivered", 2)
        assert len(receiver.requests) == 1

        release.set()
        assert await worker_a == 1
    row = await the_row(runtime)
    assert (row.status, row.attempts, row.last_error) == ("delivered", 2, None)
    assert delta(before) == {"delivered": 1}  # A's 500 was not recorded


async def test_log_channel_delivers_and_counts_under_its_type(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime, receiver: Receiver
) -> None:
    before = outcomes("log")
    await post_events(client, clock.now(), status("e1", "L-1", clock.now(), "mql", team="latam"))
    clock.advance(hours=2)  # business-touch (São Paulo hours, Monday 09:00 local) breaches
    await sweep(runtime.sessions, clock.now(), runtime.policies.current)
    logged = [r for r in await rows(runtime, OutboxMessage) if r.channel_type == "log"]
    assert [(r.type, r.status) for r in logged] == [("sla.breached", "pending")]
    await run_dispatch(runtime)
    logged = [r for r in await rows(runtime, OutboxMessage) if r.channel_type == "log"]
    assert [(r.type, r.status) for r in logged] == [("sla.breached", "delivered")]
    assert delta(before, "log") == {"delivered": 1}


async def test_a_message_that_fails_unexpectedly_does_not_lose_the_batch(
    client: httpx.AsyncClient,
    clock: FrozenClock,
    runtime: Runtime,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A delivery that raises is retried on its own; the rest of its batch is recorded, so
    nothing that was delivered is sent again when the leases run out."""
    from service.notify import dispatcher

    real_deliver = dispatcher.deliver

    async def flaky(message: Message, *args: Any) -> Delivery:
        if message.type == "sla.escalated":
            raise RuntimeError("renderer exploded")
        return await real_deliver(message, *args)

    monkeypatch.setattr(dispatcher, "deliver", flaky)
    await post_events(client, clock.now(), status("e1", "L-1", clock.now(), "mql", owner="rep-7"))
    clock.advance(minutes=61)
    await sweep(runtime.sessions, clock.now(), runtime.policies.current)
    assert await run_dispatch(runtime) == 2
    by_type = {r.type: r for r in await rows(runtime, OutboxMessage)}
    assert by_type["sla.breached"].status == "delivered"
    escalated = by_type["sla.escalated"]
    assert (escalated.status, escalated.attempts) == ("pending", 1)
    assert escalated.last_error == "RuntimeError: renderer exploded"
    clock.advance(seconds=runtime.settings.lease_seconds * 2)
    await run_dispatch(runtime)
    assert [b["type"] for b in receiver.bodies()] == ["sla.breached"]


async def test_a_failing_receiver_is_logged_when_it_starts_failing_and_when_it_recovers(
    client: httpx.AsyncClient,
    clock: FrozenClock,
    runtime: Runtime,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="service.notify.dispatcher")
    await one_reminder(client, clock, runtime)
    receiver.responses = [(503, {}), (503, {}), (503, {})]
    streaks: dict[str, FailureStreak] = {}  # kept from round to round, as the scheduler does
    for _ in range(4):
        attempted = await dispatch(
            runtime.sessions, runtime.http, runtime.clock, runtime.policies.current,
            runtime.retry, streaks=streaks,
        )  # fmt: skip
        assert attempted == 1
        clock.set((await the_row(runtime)).next_attempt_at or clock.now())
    assert (await the_row(runtime)).status == "delivered"
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == dispatcher.log.name]
    assert lines == [
        (logging.WARNING, "deliveries to ops failed (HTTP 503); retrying"),
        (logging.INFO, "deliveries to ops recovered after 3 failures over 0 s"),
    ]
