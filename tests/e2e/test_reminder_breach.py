"""A cycle carried past its reminder and deadline by a frozen clock: a real loopback receiver gets
the signed ``sla.reminder`` and ``sla.breached`` once each, verified with the Standard Webhooks
reference library."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from fastapi import FastAPI
from standardwebhooks.webhooks import Webhook

from service.clock import FrozenClock
from service.notify.dispatcher import dispatch
from service.runtime import Runtime
from service.sweep import sweep
from tests.conftest import RECEIVER_SECRET, Receiver
from tests.helpers import post_events, status


async def tick(runtime: Runtime) -> None:
    """What the scheduler does each second: sweep, then deliver."""
    await sweep(runtime.sessions, runtime.clock.now(), runtime.policies.current)
    await dispatch(runtime.sessions, runtime.http, runtime.clock, runtime.policies.current,
                   runtime.retry)  # fmt: skip


async def test_reminder_then_breach_delivered_once_each(
    app: FastAPI, client: httpx.AsyncClient, clock: FrozenClock, receiver: Receiver
) -> None:
    runtime: Runtime = app.state.runtime
    start = clock.now()
    response = await post_events(
        client, clock.now(), status("e1", "L-1", start, "mql", owner="rep-7", team="emea")
    )
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 1, "duplicates": 0}

    await tick(runtime)
    assert receiver.requests == []

    clock.advance(minutes=31)  # past 50% of the 1h target
    await tick(runtime)
    await tick(runtime)
    assert [b["type"] for b in receiver.bodies()] == ["sla.reminder"]

    clock.advance(minutes=20)  # 51m: the 10-minutes-before reminder
    await tick(runtime)
    assert [b["type"] for b in receiver.bodies()] == ["sla.reminder", "sla.reminder"]

    clock.advance(minutes=10)  # 61m: past the deadline, the breach and the 0m escalation
    await tick(runtime)
    await tick(runtime)
    bodies = receiver.bodies()
    # the breach and the 0m escalation fall due together; their delivery order is not defined
    assert [b["type"] for b in bodies[:2]] == ["sla.reminder", "sla.reminder"]
    assert sorted(b["type"] for b in bodies[2:]) == ["sla.breached", "sla.escalated"]
    breach = next(b for b in bodies if b["type"] == "sla.breached")
    assert breach["policy"] == "first-touch"
    assert breach["lead"] == {
        "source": "generic", "id": "L-1", "owner": "rep-7", "team": "emea", "status": "mql",
    }  # fmt: skip
    assert breach["sla"]["due_at"] == (start + timedelta(hours=1)).isoformat().replace(
        "+00:00", "Z"
    )
    assert breach["sla"]["elapsed_business_seconds"] == 3600
    assert breach["recipient"] == "rep-7"
    escalation = next(b for b in bodies if b["type"] == "sla.escalated")
    assert escalation["recipient"] == "mgr-1"

    # The reference library's verify() checks the timestamp against the wall clock, which the
    # frozen test clock is far from; its sign() recomputes the expected signature instead.
    reference = Webhook(RECEIVER_SECRET)
    for request in receiver.requests:
        headers = request["headers"]
        sent_at = datetime.fromtimestamp(int(headers["webhook-timestamp"]), UTC)
        expected = reference.sign(headers["webhook-id"], sent_at, request["body"].decode())
        assert headers["webhook-signature"] == expected
    ids = [r["headers"]["webhook-id"] for r in receiver.requests]
    assert len(set(ids)) == len(ids)

    clock.advance(minutes=5)
    await tick(runtime)
    assert len(receiver.requests) == 4  # nothing fires twice
