"""Events apply in ``occurred_at`` order, whatever order they arrive in: late events re-derive the
lead's cycles, and an outcome already announced is corrected once."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from service.clock import FrozenClock
from service.event_codec import event_from_json
from service.ingest import store_delivery
from service.models import Cycle, Lead, OutboxMessage
from service.runtime import Runtime
from tests.conftest import Receiver
from tests.helpers import activity, post_events, status
from tests.store import count, rows, tick

HOUR = timedelta(hours=1)
MIN = timedelta(minutes=1)
SECOND = timedelta(seconds=1)


@pytest.fixture
def runtime(app: FastAPI) -> Runtime:
    result: Runtime = app.state.runtime
    return result


async def first_touch(runtime: Runtime, lead: str) -> list[Cycle]:
    (pk,) = [x.id for x in await rows(runtime, Lead, Lead.external_id == lead)]
    found = await rows(runtime, Cycle, Cycle.lead_id == pk, Cycle.policy_id == "first-touch")
    return sorted(found, key=lambda c: c.number)


def types(receiver: Receiver) -> list[str]:
    return [b["type"] for b in receiver.bodies()]


def assert_rounds(receiver: Receiver, *rounds: list[str]) -> None:
    """What was delivered, round after round; within a round (notices due together and sent
    concurrently) the order is free."""
    got = types(receiver)
    assert len(got) == sum(map(len, rounds)), got
    start = 0
    for expected in rounds:
        assert sorted(got[start : start + len(expected)]) == sorted(expected), got
        start += len(expected)


async def test_call_before_the_deadline_arriving_after_the_breach_corrects_it_once(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime, receiver: Receiver
) -> None:
    t0 = clock.now()
    mql = status("e1", "L-1", t0, "mql", owner="rep-7", team="emea")
    assert (await post_events(client, clock.now(), mql)).status_code == 202
    clock.advance(minutes=61)
    await tick(runtime)
    await tick(runtime)
    assert_rounds(receiver, ["sla.breached", "sla.escalated"])  # reminders superseded
    (cycle,) = await first_touch(runtime, "L-1")
    assert (cycle.state, cycle.announced_outcome) == ("breached", "breached")

    # The rep called 30 minutes in; the CRM only tells us now.
    call = activity("e2", "L-1", t0 + 30 * MIN)
    assert (await post_events(client, clock.now(), call)).json() == {"accepted": 1,
                                                                      "duplicates": 0}  # fmt: skip
    (cycle,) = await first_touch(runtime, "L-1")
    assert (cycle.state, cycle.stopped_at, cycle.breached_at) == ("met", t0 + 30 * MIN, None)
    assert cycle.next_fire_at is None
    await tick(runtime)
    assert_rounds(receiver, ["sla.breached", "sla.escalated"], ["sla.corrected"])
    corrected = receiver.bodies()[-1]
    assert corrected["sla"]["state"] == "met"
    assert corrected["sla"]["elapsed_business_seconds"] == 1800
    assert corrected["recipient"] == "rep-7"  # whoever heard of the breach
    assert corrected["policy"] == "first-touch" and corrected["cycle"] == 1

    # Redeliveries, an even earlier touch, and time passing change nothing more.
    assert (await post_events(client, clock.now(), call)).json()["duplicates"] == 1
    await post_events(client, clock.now(), activity("e3", "L-1", t0 + 20 * MIN, "email"))
    for _ in range(3):
        clock.advance(hours=2)
        await tick(runtime)
    assert_rounds(receiver, ["sla.breached", "sla.escalated"], ["sla.corrected"])
    assert await count(runtime, OutboxMessage, OutboxMessage.type == "sla.corrected") == 1
    (cycle,) = await first_touch(runtime, "L-1")
    assert (cycle.state, cycle.stopped_at) == ("met", t0 + 20 * MIN)


async def test_late_call_after_the_deadline_keeps_the_breach_without_correction(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime, receiver: Receiver
) -> None:
    t0 = clock.now()
    await post_events(client, clock.now(), status("e1", "L-1", t0, "mql", owner="rep-7"))
    clock.advance(minutes=90)
    await tick(runtime)
    await tick(runtime)
    await post_events(client, clock.now(), activity("e2", "L-1", t0 + 70 * MIN))
    await tick(runtime)
    (cycle,) = await first_touch(runtime, "L-1")
    assert (cycle.state, cycle.breached_at, cycle.stopped_at) == ("breached", t0 + HOUR,
                                                                  t0 + 70 * MIN)  # fmt: skip
    assert "sla.corrected" not in types(receiver)


def story(lead: str, t0: datetime) -> list[dict[str, Any]]:
    """Two cycles with a pause, a stop by status, a re-entry and a touch."""
    at = [t0 + k * 7 * MIN for k in range(9)]
    return [
        status(f"{lead}-a", lead, at[0], "new", owner="rep-7", team="emea"),
        status(f"{lead}-b", lead, at[1], "mql"),
        status(f"{lead}-c", lead, at[2], "waiting_on_lead"),
        status(f"{lead}-d", lead, at[3], "mql"),
        status(f"{lead}-e", lead, at[4], "recycled"),
        status(f"{lead}-f", lead, at[5], "mql", priority="high"),
        # same instant as the call: ties break on the event id, whatever the arrival order
        activity(f"{lead}-g", lead, at[8]),
        status(f"{lead}-h", lead, at[8], "sal"),
        activity(f"{lead}-i", lead, at[8] + 3 * HOUR),
    ]


def shape(cycles: list[Cycle]) -> list[tuple[Any, ...]]:
    def pauses(cycle: Cycle) -> list[tuple[str, str | None, str]]:
        return [(p["start"], p["end"], p["status"]) for p in cycle.details.get("pauses", [])]

    return [
        (c.policy_id, c.number, c.state, c.open, c.started_at, c.due_at, c.stopped_at,
         c.breached_at, c.target_seconds, c.elapsed_business_seconds, pauses(c),
         c.details.get("stop_reason"))
        for c in cycles
    ]  # fmt: skip


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_shuffled_arrival_gives_the_cycles_of_in_order_arrival(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime, seed: int
) -> None:
    t0 = clock.now() - 5 * HOUR
    for one in story("IN", t0):
        assert (await post_events(client, clock.now(), one)).status_code == 202
    shuffled = story("SH", t0)
    random.Random(seed).shuffle(shuffled)
    for one in shuffled + shuffled[:3]:  # and some redeliveries
        assert (await post_events(client, clock.now(), one)).status_code == 202
    in_order = await first_touch(runtime, "IN")
    assert shape(await first_touch(runtime, "SH")) == shape(in_order)
    # The expected outcome, spelled out: cycle 1 paused 7 minutes then stopped by recycled,
    # cycle 2 (high priority, 15m) breached and stopped by the call.
    assert [(c.number, c.state, c.stopped_at) for c in in_order] == [
        (1, "met", t0 + 28 * MIN),
        (2, "breached", t0 + 56 * MIN),
    ]
    assert in_order[1].due_at == t0 + 35 * MIN + 15 * MIN
    (lead_in,) = await rows(runtime, Lead, Lead.external_id == "IN")
    (lead_sh,) = await rows(runtime, Lead, Lead.external_id == "SH")
    assert (lead_sh.status, lead_sh.owner, lead_sh.priority) == (lead_in.status, lead_in.owner,
                                                                 lead_in.priority)  # fmt: skip


async def test_an_earlier_cycle_arriving_late_does_not_inherit_the_later_ones_notices(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime, receiver: Receiver
) -> None:
    """The lead's second cycle arrives first and breaches; then its first cycle (met) arrives.
    The breach announced belongs to the second cycle: nothing is corrected and nothing fires
    twice."""
    t0 = clock.now()
    second_mql = status("e3", "L-1", t0 + 2 * HOUR, "mql", owner="rep-7")
    clock.set(t0 + 2 * HOUR)
    await post_events(client, clock.now(), second_mql)
    clock.advance(minutes=61)
    await tick(runtime)
    await tick(runtime)
    assert_rounds(receiver, ["sla.breached", "sla.escalated"])
    breach = receiver.bodies()[0]
    assert breach["sla"]["started_at"] == (t0 + 2 * HOUR).isoformat().replace("+00:00", "Z")

    await post_events(
        client, clock.now(),
        status("e1", "L-1", t0, "mql", owner="rep-7"),
        status("e2", "L-1", t0 + 10 * MIN, "recycled"),
    )  # fmt: skip
    for _ in range(2):
        await tick(runtime)
    cycles = await first_touch(runtime, "L-1")
    assert [(c.number, c.state, c.started_at) for c in cycles] == [
        (1, "met", t0),
        (2, "breached", t0 + 2 * HOUR),
    ]
    assert_rounds(receiver, ["sla.breached", "sla.escalated"])
    assert cycles[1].announced_outcome == "breached"
    assert "breach" in cycles[1].fired and cycles[0].fired == []


async def test_recycled_lead_back_to_mql_gets_cycle_two_and_cycle_one_keeps_its_outcome(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime, receiver: Receiver
) -> None:
    t0 = clock.now()
    await post_events(client, clock.now(), status("e1", "L-1", t0, "mql", owner="rep-7"))
    clock.advance(minutes=70)
    await tick(runtime)
    await tick(runtime)
    await post_events(client, clock.now(), status("e2", "L-1", clock.now(), "recycled"))
    clock.advance(hours=1)
    await post_events(client, clock.now(), status("e3", "L-1", clock.now(), "mql"))
    one, two = await first_touch(runtime, "L-1")
    assert (one.number, one.state, one.open, one.breached_at) == (1, "breached", False, t0 + HOUR)
    assert one.stopped_at == t0 + 70 * MIN
    assert (two.number, two.state, two.open, two.started_at) == (2, "running", True, clock.now())
    assert two.due_at == clock.now() + HOUR
    clock.advance(minutes=61)
    await tick(runtime)
    await tick(runtime)
    breaches = [b for b in receiver.bodies() if b["type"] == "sla.breached"]
    assert [b["cycle"] for b in breaches] == [1, 2]
    one_again, _ = await first_touch(runtime, "L-1")
    assert (one_again.state, one_again.breached_at) == ("breached", t0 + HOUR)


async def test_pause_moves_the_deadline_by_its_length(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime, receiver: Receiver
) -> None:
    t0 = clock.now()
    await post_events(client, clock.now(), status("e1", "L-1", t0, "mql", owner="rep-7"))
    clock.advance(minutes=10)
    await post_events(client, clock.now(), status("e2", "L-1", clock.now(), "waiting_on_lead"))
    (cycle,) = await first_touch(runtime, "L-1")
    assert (cycle.state, cycle.due_at, cycle.next_fire_at) == ("paused", None, None)
    clock.advance(hours=5)  # paused: nothing fires however long it lasts
    await tick(runtime)
    assert receiver.requests == []
    await post_events(client, clock.now(), status("e3", "L-1", clock.now(), "mql"))
    (cycle,) = await first_touch(runtime, "L-1")
    assert cycle.state == "running"
    assert cycle.due_at == t0 + HOUR + 5 * HOUR
    clock.set(cycle.due_at - timedelta(seconds=1))
    await tick(runtime)
    assert "sla.breached" not in types(receiver)
    clock.set(cycle.due_at)
    await tick(runtime)
    await tick(runtime)
    (breach,) = [b for b in receiver.bodies() if b["type"] == "sla.breached"]
    assert breach["sla"]["elapsed_business_seconds"] == 3600
    assert breach["sla"]["due_at"] == cycle.due_at.isoformat().replace("+00:00", "Z")


async def test_self_originated_events_do_not_start_clocks(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime
) -> None:
    """A change lead-sla itself made in the CRM updates the lead but starts no cycle."""
    t0 = clock.now() - HOUR
    ours = event_from_json({**status("e1", "L-1", t0, "mql", owner="rep-7", team="latam"),
                            "self_originated": True})  # fmt: skip
    assert ours.self_originated
    async with runtime.sessions() as session, session.begin():
        result = await store_delivery(
            session, "generic", [ours], None, clock.now(), runtime.policies.current
        )
    assert result.accepted == 1
    (lead,) = await rows(runtime, Lead)
    assert lead.status == "mql"
    assert await count(runtime, Cycle) == 0
    # Later events fold on top of it without starting the clock it did not start...
    await post_events(client, clock.now(), activity("e2", "L-1", t0 + MIN))
    assert await count(runtime, Cycle) == 0
    # ...while the same change made by a person does.
    await post_events(client, clock.now(), status("e3", "L-1", t0 + 2 * MIN, "recycled"),
                      status("e4", "L-1", t0 + 3 * MIN, "mql"))  # fmt: skip
    assert sorted(c.policy_id for c in await rows(runtime, Cycle)) == ["business-touch",
                                                                      "first-touch"]  # fmt: skip


async def test_a_late_pause_that_moves_the_deadline_past_now_withdraws_the_breach(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime, receiver: Receiver
) -> None:
    """The breach was announced, then a pause arrives that happened before the deadline: the
    clock is running again. The breach is corrected, and announced again if the new deadline
    passes too."""
    t0 = clock.now()
    await post_events(client, clock.now(), status("e1", "L-1", t0, "mql", owner="rep-7"))
    clock.advance(minutes=61)
    await tick(runtime)
    await tick(runtime)
    assert_rounds(receiver, ["sla.breached", "sla.escalated"])

    clock.set(t0 + 80 * MIN)
    await post_events(client, clock.now(), status("e2", "L-1", t0 + 10 * MIN, "waiting_on_lead"),
                      status("e3", "L-1", t0 + 75 * MIN, "mql"))  # fmt: skip
    (cycle,) = await first_touch(runtime, "L-1")
    new_due = t0 + HOUR + 65 * MIN
    assert (cycle.state, cycle.due_at, cycle.breached_at) == ("running", new_due, None)
    await tick(runtime)
    assert_rounds(receiver, ["sla.breached", "sla.escalated"], ["sla.corrected"])
    corrected = receiver.bodies()[-1]
    assert corrected["sla"]["state"] == "running"
    assert corrected["sla"]["due_at"] == new_due.isoformat().replace("+00:00", "Z")

    clock.set(new_due - SECOND)
    await tick(runtime)
    # the clock runs again, so its reminders (superseded by the breach before) are due anew
    assert_rounds(
        receiver,
        ["sla.breached", "sla.escalated"],
        ["sla.corrected"],
        ["sla.reminder", "sla.reminder"],
    )
    clock.set(new_due)
    await tick(runtime)
    await tick(runtime)
    assert_rounds(
        receiver,
        ["sla.breached", "sla.escalated"],
        ["sla.corrected"],
        ["sla.reminder"] * 2,
        ["sla.breached", "sla.escalated"],
    )
    breach = next(b for b in receiver.bodies()[5:] if b["type"] == "sla.breached")
    assert breach["sla"]["due_at"] == new_due.isoformat().replace("+00:00", "Z")
    ids = [r["headers"]["webhook-id"] for r in receiver.requests]
    assert len(set(ids)) == len(ids)  # new notices, not redeliveries of the withdrawn ones
    (cycle,) = await first_touch(runtime, "L-1")
    assert (cycle.state, cycle.breached_at, cycle.announced_outcome) == ("breached", new_due,
                                                                         "breached")  # fmt: skip


async def test_a_late_event_that_moves_a_cycles_start_keeps_its_notices(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime, receiver: Receiver
) -> None:
    """The CRM re-sends older history: the lead was already an MQL half an hour earlier. The
    cycle now starts then — it is still the cycle whose breach was announced, so nothing is
    announced twice."""
    t0 = clock.now()
    await post_events(client, clock.now(), status("e1", "L-1", t0, "mql", owner="rep-7"))
    clock.advance(minutes=61)
    await tick(runtime)
    await tick(runtime)
    assert_rounds(receiver, ["sla.breached", "sla.escalated"])
    (before,) = await first_touch(runtime, "L-1")

    await post_events(client, clock.now(), status("e0", "L-1", t0 - 30 * MIN, "mql"))
    (cycle,) = await first_touch(runtime, "L-1")
    assert cycle.id == before.id
    assert (cycle.started_at, cycle.due_at, cycle.state) == (t0 - 30 * MIN, t0 + 30 * MIN,
                                                             "breached")  # fmt: skip
    for _ in range(2):
        await tick(runtime)
    assert_rounds(receiver, ["sla.breached", "sla.escalated"])


async def test_a_cycle_removed_by_a_late_event_does_not_swallow_a_new_cycles_notices(
    client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime, receiver: Receiver
) -> None:
    """A late event can show that a cycle never started, and its row goes. The next cycle
    created must not inherit its identity, or its notices would be taken for redeliveries of
    the removed cycle's and never sent."""
    t0 = clock.now()
    await post_events(client, clock.now(), status("a1", "L-A", t0, "mql", owner="rep-7"))
    clock.advance(minutes=61)
    await tick(runtime)
    await tick(runtime)
    (gone,) = await first_touch(runtime, "L-A")
    assert len(receiver.requests) == 2

    # lead-sla itself had set the status a minute earlier: the CRM's "mql" was no entry
    ours = event_from_json({**status("a0", "L-A", t0 - MIN, "mql"), "self_originated": True})
    async with runtime.sessions() as session, session.begin():
        await store_delivery(session, "generic", [ours], None, clock.now(),
                             runtime.policies.current)  # fmt: skip
    assert await first_touch(runtime, "L-A") == []
    # The breach announced for it is withdrawn, once.
    await tick(runtime)
    await tick(runtime)
    assert_rounds(receiver, ["sla.breached", "sla.escalated"], ["sla.corrected"])
    void = receiver.bodies()[-1]
    assert (void["sla"]["state"], void["cycle"], void["recipient"]) == ("void", gone.number,
                                                                        "rep-7")  # fmt: skip
    assert void["id"] == f"cycle-{gone.id}-corrected-0"

    await post_events(client, clock.now(), status("b1", "L-B", clock.now(), "mql", owner="rep-7"))
    (fresh,) = await first_touch(runtime, "L-B")
    assert fresh.id != gone.id
    clock.advance(minutes=61)
    await tick(runtime)
    await tick(runtime)
    b_notices = [b["type"] for b in receiver.bodies() if b["lead"]["id"] == "L-B"]
    assert sorted(b_notices) == ["sla.breached", "sla.escalated"]
