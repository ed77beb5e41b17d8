"""Periodic evaluation of volume policies: ``sla.volume_at_risk`` when the pace projects a miss
past the policy's ``at_risk_after`` point, ``sla.volume_missed`` when a period ended short.

Each notice's outbox key names the policy, group and period, so however often the evaluation
runs (or on however many workers), each goes out once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.clock import rfc3339
from service.outbox import enqueue, outbox_row, resolve_recipient
from service.policies import LoadedPolicies
from service.reports import volume_progress
from service.sla.policy import Policy
from service.sla.volume import VolumeProgress


async def evaluate_volume(
    sessions: async_sessionmaker[AsyncSession], loaded: LoadedPolicies, now: datetime
) -> int:
    """Queue due volume notices; returns how many rows were offered to the outbox."""
    offered = 0
    async with sessions() as session, session.begin():
        for policy in loaded.policy_set.policies:
            if policy.kind != "volume":
                continue
            start, end, rows = await volume_progress(session, loaded, policy, now)
            for row in rows:
                if not row.on_pace and row.elapsed_fraction >= policy.at_risk_after:
                    offered += await _notify(
                        session, loaded, policy, "volume_at_risk", row, start, end, now
                    )
            # the period that just ended, evaluated in full
            prev_start, prev_end, prev_rows = await volume_progress(
                session, loaded, policy, start - timedelta(microseconds=1)
            )
            for row in prev_rows:
                if row.count < row.target:
                    offered += await _notify(
                        session, loaded, policy, "volume_missed", row, prev_start, prev_end, now
                    )
    return offered


async def _notify(
    session: AsyncSession,
    loaded: LoadedPolicies,
    policy: Policy,
    kind: str,
    row: VolumeProgress,
    start: datetime,
    end: datetime,
    now: datetime,
) -> int:
    message_type = "sla." + kind
    owner = row.group if policy.per == "owner" else None
    rows: list[dict[str, Any]] = []
    for index, recipient in enumerate(policy.notify.get(kind, ())):
        channel = loaded.policy_set.channels.get(recipient.channel)
        if channel is None:
            continue
        key = f"volume-{policy.id}-{row.group}-{start.date().isoformat()}-{kind}-{index}"
        payload = {
            "type": message_type,
            "id": key,
            "occurred_at": rfc3339(now),
            "policy": policy.id,
            "group": {"per": policy.per, "value": row.group},
            "period": {"kind": policy.period, "start": start.isoformat(), "end": end.isoformat()},
            "volume": {
                "count": row.count,
                "target": row.target,
                "projected": row.projected,
                "pace": row.pace_text,
            },
        }
        rows.append(
            outbox_row(
                key, None, message_type, channel,
                resolve_recipient(recipient, owner, loaded.policy_set), payload, now,
            )
        )  # fmt: skip
    await enqueue(session, rows)
    return len(rows)
