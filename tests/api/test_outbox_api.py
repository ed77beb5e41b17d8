"""Dead notifications are visible through the API and can be sent again."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from prometheus_client import REGISTRY

from service.clock import FrozenClock
from service.gauges import refresh_gauges
from service.notify.dispatcher import dispatch
from service.runtime import Runtime
from service.sweep import sweep
from tests.conftest import Receiver
from tests.helpers import post_events, status


async def test_dead_notification_listed_and_retried(
    app: FastAPI, client: httpx.AsyncClient, clock: FrozenClock, receiver: Receiver
) -> None:
    runtime: Runtime = app.state.runtime
    start = clock.now()
    await post_events(client, start, status("e1", "L-1", start, "mql", owner="rep-7"))
    clock.advance(minutes=31)
    await sweep(runtime.sessions, clock.now(), runtime.policies.current)
    receiver.responses.append((410, {}))  # the receiver says: gone, do not retry
    await dispatch(runtime.sessions, runtime.http, clock, runtime.policies.current, runtime.retry)

    dead = (await client.get("/api/v1/outbox", params={"status": "dead"})).json()
    assert [(m["type"], m["attempts"], m["last_error"]) for m in dead["items"]] == [
        ("sla.reminder", 1, "HTTP 410")
    ]
    await refresh_gauges(runtime.sessions, clock.now())  # the scheduler's snapshot tick
    assert REGISTRY.get_sample_value("lead_sla_outbox_dead", {"channel": "webhook"}) == 1

    retried = await client.post("/api/v1/outbox/retry", params={"id": dead["items"][0]["id"]})
    assert retried.json() == {"requeued": 1}
    clock.advance(seconds=1)
    await dispatch(runtime.sessions, runtime.http, clock, runtime.policies.current, runtime.retry)
    delivered = (await client.get("/api/v1/outbox", params={"status": "delivered"})).json()
    assert [m["key"] for m in delivered["items"]] == [dead["items"][0]["key"]]
    # both attempts carried the same idempotency key
    ids = {r["headers"]["webhook-id"] for r in receiver.requests}
    assert ids == {dead["items"][0]["key"]} and len(receiver.requests) == 2

    assert (await client.post("/api/v1/outbox/retry", params={"id": 999})).status_code == 404
