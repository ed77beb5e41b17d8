"""Turning a fired timer (or a correction) into outbox rows, in the caller's transaction.

Each row's ``key`` — cycle, step and recipient index — is unique: the sweep, a retry after a crash
or a second worker writing the same notification hits the constraint instead of sending twice. The
key is also the ``webhook-id`` a receiver dedupes on.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol, cast

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from service.bulk import insert_new
from service.clock import rfc3339
from service.models import OutboxMessage
from service.sla.policy import ChannelSpec, PolicySet, Recipient

OUTBOX = cast(Table, OutboxMessage.__table__)
MESSAGE_TYPE = {
    "reminder": "sla.reminder",
    "breach": "sla.breached",
    "escalation": "sla.escalated",
    "corrected": "sla.corrected",
}


class CycleView(Protocol):
    """What a notification says about a cycle: a stored row, or the sweep's lighter copy."""

    @property
    def id(self) -> int: ...
    @property
    def policy_id(self) -> str: ...
    @property
    def number(self) -> int: ...
    @property
    def owner(self) -> str | None: ...
    @property
    def team(self) -> str | None: ...
    @property
    def state(self) -> str: ...
    @property
    def started_at(self) -> datetime: ...
    @property
    def due_at(self) -> datetime | None: ...
    @property
    def target_seconds(self) -> int | None: ...
    @property
    def attempts(self) -> int | None: ...


class LeadView(Protocol):
    @property
    def source(self) -> str: ...
    @property
    def external_id(self) -> str: ...
    @property
    def status(self) -> str | None: ...


def step_key(step: str, round_: int) -> str:
    """A step's name in outbox keys. When a late event withdraws a breach already announced, the
    cycle's notices start a new round: the same step fires again under a new key instead of
    being taken for a redelivery of the withdrawn one."""
    return step if round_ == 0 else f"{step}.r{round_}"


def resolve_recipient(recipient: Recipient, owner: str | None, policy_set: PolicySet) -> str | None:
    """``owner`` -> the cycle's owner, ``manager`` -> the owner's manager, else the person id."""
    if recipient.to == "owner":
        return owner
    if recipient.to == "manager":
        person = policy_set.people.get(owner or "")
        return person.manager if person else None
    return recipient.to


def cycle_payload(
    message_type: str,
    key: str,
    occurred_at: datetime,
    cycle: CycleView,
    lead: LeadView,
    elapsed: float,
    late: bool,
) -> dict[str, Any]:
    """The body of CONTRACT.md §4, plus ``late`` for timers fired after downtime."""
    target = cycle.target_seconds or 0
    return {
        "type": message_type,
        "id": key,
        "occurred_at": rfc3339(occurred_at),
        "policy": cycle.policy_id,
        "cycle": cycle.number,
        "late": late,
        "lead": {
            "source": lead.source,
            "id": lead.external_id,
            "owner": cycle.owner,
            "team": cycle.team,
            "status": lead.status,
        },
        "sla": {
            "started_at": rfc3339(cycle.started_at),
            "due_at": rfc3339(cycle.due_at),
            "state": cycle.state,
            "elapsed_business_seconds": round(elapsed, 3),
            "remaining_business_seconds": round(max(0.0, target - elapsed), 3),
            "attempts": cycle.attempts,
        },
    }


def pg_rfc3339(column: str) -> str:
    """``rfc3339`` in PostgreSQL: UTC with a ``Z``, microseconds only when there are any."""
    return (
        f"to_char({column} AT TIME ZONE 'UTC', CASE WHEN date_trunc('second', {column}) = "
        f"""{column} THEN 'YYYY-MM-DD"T"HH24:MI:SS"Z"' ELSE 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"' END)"""
    )


def pg_cycle_payload(message: str, cycle: str, lead: str) -> str:
    """``cycle_payload`` as a PostgreSQL expression, so the sweep can write a batch of
    notifications without building each body in Python.

    ``cycle`` names a row with the ``sla_cycles`` columns a body shows, ``lead`` one with the
    ``leads`` columns (the caller joins them: a lookup per body in a subquery costs more than
    the rest of the body). ``message`` names a row with ``type``, ``key``, ``occurred_at``
    (already RFC 3339), ``late``, ``state`` (the cycle's state when the step fired), and
    ``elapsed`` and ``remaining`` as JSON number text (Python's float text, so a body parses to
    the same values, floats included, as ``cycle_payload``'s).

    The body is put together as text: ``json_build_object`` looks up the type of each of its
    arguments, keys included, on every call, which made it twice as costly. Every string goes
    through ``to_json``, which escapes it, except instants in RFC 3339, which need no escaping;
    numbers and booleans are written as they are.
    """
    late = f"CASE WHEN {message}.late THEN 'true' ELSE 'false' END"
    body = _pg_object(
        ("type", _pg_string(f"{message}.type")),
        ("id", _pg_string(f"{message}.key")),
        ("occurred_at", _pg_instant(f"{message}.occurred_at")),
        ("policy", _pg_string(f"{cycle}.policy_id")),
        ("cycle", _pg_number(f"{cycle}.number")),
        ("late", late),
        ("lead", _pg_object(
            ("source", _pg_string(f"{lead}.source")),
            ("id", _pg_string(f"{lead}.external_id")),
            ("owner", _pg_string(f"{cycle}.owner")),
            ("team", _pg_string(f"{cycle}.team")),
            ("status", _pg_string(f"{lead}.status")),
        )),
        ("sla", _pg_object(
            ("started_at", _pg_instant(pg_rfc3339(f"{cycle}.started_at"))),
            ("due_at", _pg_instant(pg_rfc3339(f"{cycle}.due_at"))),
            ("state", _pg_string(f"{message}.state")),
            ("elapsed_business_seconds", f"{message}.elapsed"),
            ("remaining_business_seconds", f"{message}.remaining"),
            ("attempts", _pg_number(f"{cycle}.attempts")),
        )),
    )  # fmt: skip
    return f"CAST({body} AS json)"


def _pg_object(*members: tuple[str, str]) -> str:
    """The text of a JSON object: each member a plain name and an expression of its JSON text."""
    parts = [
        f"""'{"," if i else "{"}"{name}":' || {value}""" for i, (name, value) in enumerate(members)
    ]
    return " || ".join(parts) + " || '}'"


def _pg_string(value: str) -> str:
    return f"coalesce(CAST(to_json(CAST({value} AS text)) AS text), 'null')"


def _pg_instant(rfc3339: str) -> str:
    return f"""coalesce('"' || {rfc3339} || '"', 'null')"""


def _pg_number(value: str) -> str:
    return f"coalesce(CAST({value} AS text), 'null')"


def outbox_row(
    key: str,
    cycle_id: int | None,
    message_type: str,
    channel: ChannelSpec,
    recipient: str | None,
    payload: dict[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """A new, pending outbox row as insert parameters."""
    return {
        "key": key,
        "cycle_id": cycle_id,
        "type": message_type,
        "channel": channel.name,
        "channel_type": channel.type,
        "recipient": recipient,
        "payload": payload,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


def addressees(
    policy_set: PolicySet, policy_id: str, notify_kind: str
) -> list[tuple[int, ChannelSpec, Recipient]]:
    """Who hears of one kind of notice under a policy: (index, channel, recipient) for each
    recipient whose channel exists. The index is the recipient's place in the policy's list, so
    a key stays the same when another channel of that list is removed."""
    policy = policy_set.policy(policy_id)
    recipients = policy.notify.get(notify_kind, ()) if policy else ()
    if notify_kind == "corrected" and not recipients and policy:
        recipients = policy.notify.get("breach", ())  # whoever heard of the breach hears of this
    found = []
    for index, recipient in enumerate(recipients):
        channel = policy_set.channels.get(recipient.channel)
        if channel is not None:
            found.append((index, channel, recipient))
    return found


def messages_for(
    policy_set: PolicySet,
    notify_kind: str,
    step: str,
    cycle: CycleView,
    lead: LeadView,
    occurred_at: datetime,
    elapsed: float,
    late: bool,
    now: datetime,
) -> list[dict[str, Any]]:
    """Outbox rows (as insert parameters) for one step of one cycle: one per recipient."""
    message_type = MESSAGE_TYPE[notify_kind]
    rows = []
    for index, channel, recipient in addressees(policy_set, cycle.policy_id, notify_kind):
        key = f"cycle-{cycle.id}-{step}-{index}"
        rows.append(
            outbox_row(
                key, cycle.id, message_type, channel,
                resolve_recipient(recipient, cycle.owner, policy_set),
                cycle_payload(message_type, key, occurred_at, cycle, lead, elapsed, late), now,
            )
        )  # fmt: skip
    return rows


async def enqueue(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Add outbox rows; a row whose key exists already is a notification already written."""
    await insert_new(session, OUTBOX, rows)
