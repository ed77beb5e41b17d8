"""Explaining a stored lead's cycle: the API endpoint and ``lead-sla explain`` share this."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.clock import rfc3339
from service.event_log import load_histories
from service.models import Cycle, Lead
from service.policies import LoadedPolicies
from service.sla.engine import derive_cycles
from service.sla.explain import Explanation, explain


class NotFound(LookupError):
    pass


async def explain_stored_cycle(
    session: AsyncSession,
    policies: LoadedPolicies,
    source: str,
    external_id: str,
    policy_id: str,
    number: int | None,
    now: datetime,
) -> Explanation:
    lead = await session.scalar(
        select(Lead).where(Lead.source == source, Lead.external_id == external_id)
    )
    if lead is None:
        raise NotFound(f"no lead {external_id!r} from {source!r}")
    policy = policies.policy_set.policy(policy_id)
    if policy is None:
        raise NotFound(f"no policy {policy_id!r} in the loaded policy set")
    stored = (
        await session.scalars(
            select(Cycle).where(Cycle.lead_id == lead.id, Cycle.policy_id == policy_id)
        )
    ).all()
    pinned = {
        c.number: c.target_seconds or 0 for c in stored if c.policy_version != policies.version
    }
    events = (await load_histories(session, [lead.id])).get(lead.id, [])
    cycles = derive_cycles(policy, events, now, policies.calendars, pinned)
    if not cycles:
        raise NotFound(f"lead {external_id!r} has no {policy_id!r} cycle")
    chosen = cycles[-1] if number is None else next((c for c in cycles if c.number == number), None)
    if chosen is None:
        raise NotFound(f"lead {external_id!r} has no {policy_id!r} cycle {number}")
    return explain(chosen, policies.calendars(chosen.calendar), now)


def explanation_json(explanation: Explanation) -> dict[str, Any]:
    cycle = explanation.cycle
    return {
        "policy": cycle.policy_id,
        "cycle": cycle.number,
        "state": cycle.state,
        "calendar": cycle.calendar or "24x7",
        "started_at": rfc3339(cycle.started_at),
        "due_at": rfc3339(cycle.due_at),
        "stopped_at": rfc3339(cycle.stopped_at),
        "until": rfc3339(explanation.until),
        "target_business_seconds": cycle.target_seconds,
        "elapsed_business_seconds": explanation.elapsed_business_seconds,
        "remaining_business_seconds": explanation.remaining_business_seconds,
        "intervals": [
            {
                "start": rfc3339(i.start),
                "end": rfc3339(i.end),
                "seconds": i.seconds,
                "counted": i.counted,
                "reason": i.reason,
                "note": i.note,
            }
            for i in explanation.intervals
        ],
    }
