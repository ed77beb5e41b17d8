"""The timer sweep: claim cycles whose ``next_fire_at`` has come, fire their due steps into the
outbox and advance ``next_fire_at`` — all in one transaction per batch.

Claiming uses ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so any number of workers — and several
transactions of one worker (``concurrency``) — share the work without waiting on each other; on
SQLite a single worker runs (see ``worker_lock``) one transaction at a time inside
``BEGIN IMMEDIATE``. Steps already in ``fired`` are never fired again, and outbox keys are unique
per (cycle, step, recipient): a crash between claim and commit rolls everything back, and the
next sweep fires those steps exactly once — marked ``late`` if they are overdue.

What firing means is written twice, and the two must agree (a test runs both over the same
cycles and compares every column and every notification):

- ``_fire_cycle``, in Python, cycle by cycle: SQLite, and the rare PostgreSQL cycle the batch
  statement leaves out (see ``_TIE_OFFSET``);
- ``_PG_SWEEP``, one PostgreSQL statement per batch that claims the cycles, fires their steps,
  updates them and writes their notifications, bodies included. No row travels to Python and
  back, which is what lets a burst of due timers (a CRM import, the end of an outage) drain at
  tens of thousands a second with the worker process nearly idle.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import metrics
from service.bulk import Write, write
from service.cycle_rows import CYCLES
from service.models import Cycle, Lead
from service.outbox import (
    MESSAGE_TYPE,
    addressees,
    enqueue,
    messages_for,
    pg_cycle_payload,
    pg_rfc3339,
    step_key,
)
from service.policies import LoadedPolicies
from service.repository import is_postgresql
from service.sla.policy import PolicySet


async def sweep(
    sessions: async_sessionmaker[AsyncSession],
    now: datetime,
    policies: LoadedPolicies,
    batch_size: int = 1000,
    late_after_seconds: float = 60.0,
    concurrency: int = 1,
) -> int:
    """Fire everything due at ``now``, batch by batch; returns how many steps fired.

    On PostgreSQL ``concurrency`` transactions drain the due cycles side by side, so the
    database works on one batch while another commits. SQLite always runs one.
    """

    async def drain() -> int:
        total = 0
        while True:
            async with sessions() as session, session.begin():
                claimed, fired = await fire_due_batch(
                    session, now, policies, batch_size, late_after_seconds
                )
            total += fired
            if claimed < batch_size:
                return total

    if concurrency <= 1 or not await _on_postgresql(sessions):
        return await drain()
    async with asyncio.TaskGroup() as group:
        drains = [group.create_task(drain()) for _ in range(concurrency)]
    return sum(task.result() for task in drains)


async def _on_postgresql(sessions: async_sessionmaker[AsyncSession]) -> bool:
    async with sessions() as session:  # no connection is taken for this
        return is_postgresql(session)


async def fire_due_batch(
    session: AsyncSession,
    now: datetime,
    policies: LoadedPolicies,
    batch_size: int,
    late_after_seconds: float,
) -> tuple[int, int]:
    """Claim up to ``batch_size`` due cycles and fire them in the session's transaction; returns
    (cycles claimed, steps fired)."""
    policy_set = policies.policy_set
    claimed = fired = 0
    if is_postgresql(session):
        claimed, fired = await _fire_batch_statement(
            session, now, policy_set, batch_size, late_after_seconds
        )
        if claimed == batch_size:
            return claimed, fired
    more, more_fired = await _fire_batch_rows(
        session, now, policy_set, batch_size - claimed, late_after_seconds
    )
    return claimed + more, fired + more_fired


@dataclass(slots=True)
class _Tally:
    """Metric increments of one batch, applied once per label set."""

    fired: int = 0
    breached: Counter[tuple[str, str]] = field(default_factory=Counter)
    reminders: Counter[tuple[str, str]] = field(default_factory=Counter)
    lags: list[float] = field(default_factory=list)

    def publish(self) -> None:
        for (policy, team), count in self.breached.items():
            metrics.CYCLES_BREACHED.labels(policy, team).inc(count)
        for (policy, kind), count in self.reminders.items():
            metrics.REMINDERS.labels(policy, kind).inc(count)
        observe = metrics.TIMER_FIRE_LAG.observe
        for lag in self.lags:
            observe(lag)


# --- PostgreSQL: one statement per batch ---------------------------------------------------

# Python's round(x, 3) of an offset whose shortest text ends in a 5 at the fourth decimal
# (0.2345) goes by the float's binary value, which SQL cannot see; such cycles (a percentage
# with several decimals of an odd target) are left to the row-by-row path. Every other offset
# rounds the same in both.
_TIE_OFFSET = r'"offset"\s*:\s*-?[0-9]+\.[0-9]{3}5[^0-9]'


def _pg_seconds(value: str) -> str:
    """Business seconds as a notice states them: rounded to the millisecond and written as
    Python writes that float (``1800.0``, ``142.89``)."""
    rounded = f"round({value}, 3)"
    return (
        f"CASE WHEN {rounded} = trunc({rounded}) THEN CAST(trim_scale({rounded}) AS text) || '.0' "
        f"ELSE CAST(trim_scale({rounded}) AS text) END"
    )


def _has_key(details: str, key: str) -> str:
    """Whether the JSON object ``details`` may have ``key``: its text holds the quoted name
    (inside a string a quote is escaped, so this is never missed). Most details have neither
    key the sweep reads, and the search costs far less than parsing the JSON for it."""
    return f"""strpos(CAST({details} AS text), '"{key}"') > 0"""


def _pg_count_outcome(details: str) -> str:
    """``details`` with ``"outcome_counted": "breached"`` added. The stored text of an object is
    extended in place (keys keep their order, and no JSON is parsed); anything else — an empty
    object, a key already there — goes through jsonb."""
    stored = f"rtrim(CAST({details} AS text))"
    return f"""CASE
            WHEN {stored} LIKE '{{%"%}}' AND {stored} NOT LIKE '%"outcome_counted"%'
            THEN CAST(left({stored}, -1) || ', "outcome_counted": "breached"}}' AS json)
            ELSE CAST(CAST({details} AS jsonb) || '{{"outcome_counted": "breached"}}' AS json)
        END"""


# ``_fire_cycle`` in SQL, for a whole batch:
# - claimed: the due cycles, locked, oldest first;
# - entries: their schedules, one row per step in schedule order; a step ``fires`` if it is due
#   and not in ``fired``; it is ``announced`` unless it is a reminder whose deadline has passed;
#   ``breached_by_then`` says whether a breach fired at or before it (the state its notice shows);
# - decided: per cycle, the steps to add to ``fired``, the breach, the last word on at_risk
#   (the last announced reminder or escalation), the next fire time;
# - updated and sent: the cycle rows, and one outbox row per announced step and recipient
#   (``addressees`` and ``managers`` come from the policy set, as in ``outbox.messages_for``);
# - the result: per policy, team and kind, what the metrics count.
_PG_SWEEP = text(f"""
WITH addressees AS (
    SELECT * FROM unnest(
        CAST(:a_policy AS varchar[]), CAST(:a_kind AS varchar[]), CAST(:a_index AS integer[]),
        CAST(:a_type AS varchar[]), CAST(:a_channel AS varchar[]),
        CAST(:a_channel_type AS varchar[]), CAST(:a_to AS varchar[])
    ) AS a(policy_id, kind, index, type, channel, channel_type, recipient)
),
managers AS (
    SELECT * FROM unnest(CAST(:p_person AS varchar[]), CAST(:p_manager AS varchar[]))
        AS p(person, manager)
),
claimed AS MATERIALIZED (
    SELECT c.ctid AS address, c.id, c.lead_id, c.policy_id, c.number, c.owner, c.team,
           c.state, c.started_at, c.due_at, c.target_seconds, c.attempts, c.next_fire_at,
           c.schedule,
           CAST(c.fired AS jsonb) AS fired,
           CASE WHEN {_has_key("c.details", "round")}
                THEN coalesce(CAST(c.details ->> 'round' AS integer), 0) ELSE 0 END AS round,
           {_has_key("c.details", "outcome_counted")}
               AND coalesce(c.details ->> 'outcome_counted', '') <> '' AS outcome_counted
    FROM sla_cycles AS c
    WHERE c.next_fire_at <= :now
          -- LIKE first: it rules out nearly every schedule for a fraction of the regex's cost
          AND NOT (CAST(c.schedule AS text) LIKE '%.___5%'
                   AND CAST(c.schedule AS text) ~ '{_TIE_OFFSET}')
    ORDER BY c.next_fire_at
    LIMIT :batch_size
    FOR UPDATE SKIP LOCKED
),
entries AS MATERIALIZED (
    SELECT s.*,
           s.fires AND NOT (s.kind = 'reminder' AND s.due_at IS NOT NULL
                            AND :now >= s.due_at) AS announced,
           bool_or(s.fires AND s.kind = 'breach')
               OVER (PARTITION BY s.id ORDER BY s.pos) AS breached_by_then
    FROM (
        SELECT c.id, c.lead_id, c.policy_id, c.number, c.owner, c.team, c.state, c.started_at,
               c.due_at, c.target_seconds, c.attempts, c.next_fire_at, c.round,
               c.outcome_counted, e.pos, e.step, e.kind, e.at, e.offset_seconds,
               jsonb_exists(c.fired, e.step) AS done,
               e.at <= :now AND NOT jsonb_exists(c.fired, e.step) AS fires
        FROM claimed AS c,
             ROWS FROM (json_to_recordset(c.schedule)
                            AS (step text, kind text, at timestamptz, "offset" numeric))
                 WITH ORDINALITY AS e(step, kind, at, offset_seconds, pos)
    ) AS s
),
decided AS (
    SELECT id,
           jsonb_agg(step ORDER BY pos) FILTER (WHERE fires) AS steps,
           bool_or(fires AND kind = 'breach') AS breaches,
           max(at) FILTER (WHERE fires AND kind = 'breach') AS breached_at,  -- one per schedule
           -- whether the last reminder or escalation announced was a reminder (else NULL)
           CASE WHEN bool_or(announced AND kind <> 'breach')
                THEN coalesce(max(pos) FILTER (WHERE announced AND kind = 'reminder'), 0)
                     > coalesce(max(pos) FILTER (WHERE announced AND kind = 'escalation'), 0)
           END AS at_risk,
           min(at) FILTER (WHERE NOT done AND at > :now) AS next_fire_at
    FROM entries GROUP BY id
),
updated AS (
    UPDATE sla_cycles AS c
    SET fired = CAST(cl.fired || coalesce(d.steps, CAST('[]' AS jsonb)) AS json),
        state = CASE WHEN d.breaches THEN 'breached' ELSE c.state END,
        breached_at = CASE WHEN d.breaches THEN d.breached_at ELSE c.breached_at END,
        announced_outcome = CASE WHEN d.breaches THEN 'breached' ELSE c.announced_outcome END,
        at_risk = coalesce(d.at_risk, c.at_risk),
        details = CASE WHEN d.breaches AND NOT cl.outcome_counted
                       THEN {_pg_count_outcome("c.details")} ELSE c.details END,
        next_fire_at = d.next_fire_at,
        updated_at = :now
    FROM claimed AS cl LEFT JOIN decided AS d ON d.id = cl.id
    WHERE c.ctid = cl.address  -- locked above, so not moved: found without an index
),
messages AS (
    SELECT 'cycle-' || e.id || '-' || e.step
               || CASE WHEN e.round = 0 THEN '' ELSE '.r' || e.round END || '-' || a.index
               AS key,
           a.type, a.channel, a.channel_type, a.index,
           CASE a.recipient WHEN 'owner' THEN e.owner
                            WHEN 'manager' THEN (SELECT p.manager FROM managers AS p
                                                 WHERE p.person = e.owner LIMIT 1)
                            ELSE a.recipient END AS recipient,
           {pg_rfc3339("e.at")} AS occurred_at,
           extract(epoch FROM :now - e.at) > :late_after AS late,
           CASE WHEN e.breached_by_then THEN 'breached' ELSE e.state END AS state,
           {_pg_seconds("e.offset_seconds")} AS elapsed,
           {_pg_seconds("greatest(0, coalesce(e.target_seconds, 0) - round(e.offset_seconds, 3))")}
               AS remaining,
           e.id, e.lead_id, e.policy_id, e.number, e.owner, e.team, e.started_at, e.due_at,
           e.attempts, e.next_fire_at, e.pos
    FROM entries AS e JOIN addressees AS a ON a.policy_id = e.policy_id AND a.kind = e.kind
    WHERE e.announced
),
sent AS (
    INSERT INTO outbox (key, cycle_id, type, channel, channel_type, recipient, payload, status,
                        attempts, next_attempt_at, created_at)
    SELECT m.key, m.id, m.type, m.channel, m.channel_type, m.recipient,
           {pg_cycle_payload("m", "m", "l")},
           'pending', 0, :now, :now
    FROM messages AS m JOIN leads AS l ON l.id = m.lead_id
    ORDER BY m.next_fire_at, m.id, m.pos, m.index
    ON CONFLICT (key) DO NOTHING
)
SELECT (SELECT count(*) FROM claimed), g.policy_id, g.team, g.kind, g.fired, g.announced,
       g.counted, g.lags
FROM (SELECT 1) AS one LEFT JOIN (
    SELECT policy_id, team, kind, count(*) AS fired, count(*) FILTER (WHERE announced) AS announced,
           count(DISTINCT id) FILTER (WHERE kind = 'breach' AND NOT outcome_counted) AS counted,
           array_agg(CAST(extract(epoch FROM :now - at) AS float8)) AS lags
    FROM entries WHERE fires GROUP BY policy_id, team, kind
) AS g ON true
""")

# Settings of the batch's transaction only:
# - no JIT: the planner cannot know that a schedule holds a handful of steps, not a hundred;
#   priced that way, the statement would be JIT-compiled on every run, which costs more than
#   running it;
# - the commit does not wait for the disk. If the database crashes before the batch reaches
#   it, the batch is lost whole (cycles and their notifications together) and fires again on
#   the next sweep. Nothing of it can have been sent: the dispatcher claims a notification in
#   a transaction that commits the usual way, and so writes every earlier commit to disk
#   first. A drain of due timers then keeps the database's CPUs busy instead of waiting on the
#   disk between batches.
_BATCH_SETTINGS = text(
    "SELECT set_config('jit', 'off', true), set_config('synchronous_commit', 'off', true)"
)
_ADDRESSEE_ARRAYS = (
    "a_policy",
    "a_kind",
    "a_index",
    "a_type",
    "a_channel",
    "a_channel_type",
    "a_to",
)


def _addressee_arrays(policy_set: PolicySet) -> dict[str, list[Any]]:
    """Who hears of each kind of notice under each policy, and each person's manager: what the
    batch statement addresses notifications with, as ``outbox.messages_for`` does."""
    rows = [
        (policy.id, kind, index, MESSAGE_TYPE[kind], channel.name, channel.type, recipient.to)
        for policy in policy_set.policies
        for kind in ("reminder", "breach", "escalation")
        for index, channel, recipient in addressees(policy_set, policy.id, kind)
    ]
    arrays = {name: [row[i] for row in rows] for i, name in enumerate(_ADDRESSEE_ARRAYS)}
    managers = {pid: person.manager for pid, person in policy_set.people.items() if person.manager}
    arrays["p_person"] = list(managers)
    arrays["p_manager"] = list(managers.values())
    return arrays


async def _fire_batch_statement(
    session: AsyncSession,
    now: datetime,
    policy_set: PolicySet,
    batch_size: int,
    late_after_seconds: float,
) -> tuple[int, int]:
    await session.execute(_BATCH_SETTINGS)
    params = {"now": now, "batch_size": batch_size, "late_after": late_after_seconds}
    rows = (await session.execute(_PG_SWEEP, {**params, **_addressee_arrays(policy_set)})).all()
    tally = _Tally()
    claimed = rows[0][0]  # one row per policy, team and kind fired; one row if none fired
    for _, policy_id, team, kind, fired, announced, counted, lags in rows:
        if policy_id is None:  # nothing fired
            continue
        policy_label = metrics.LABELS.policy(policy_id)
        tally.fired += fired
        tally.lags.extend(lags)
        if kind == "breach" and counted:
            tally.breached[(policy_label, metrics.LABELS.team(team))] += counted
        elif kind != "breach" and announced:
            tally.reminders[(policy_label, kind)] += announced
    tally.publish()
    return claimed, tally.fired


# --- row by row: SQLite, and what the batch statement leaves out ---------------------------


@dataclass(slots=True)
class _DueCycle:
    """A claimed cycle: the columns the sweep reads and writes, without ORM bookkeeping."""

    id: int
    policy_id: str
    number: int
    owner: str | None
    team: str | None
    state: str
    started_at: datetime
    due_at: datetime | None
    target_seconds: int | None
    attempts: int | None
    breached_at: datetime | None
    at_risk: bool
    announced_outcome: str | None
    schedule: list[Any]
    fired: list[Any]
    round: int  # details["round"]: which round of notices this cycle is in (outbox.step_key)
    outcome_counted: bool  # details["outcome_counted"]: its met/breached metric counted
    count_outcome: bool = False  # firing counted its breach: details get "outcome_counted"
    next_fire_at: datetime | None = None


class _Notice(NamedTuple):
    """A step that fired and is announced: one notification per recipient."""

    cycle: _DueCycle
    kind: str  # reminder | breach | escalation
    step: str  # the step's name in outbox keys (round included)
    at: datetime  # when it was due
    elapsed: float  # business seconds into the cycle at which it was due
    late: bool
    state: str  # the cycle's state once the step fired


def _fire_cycle(
    cycle: _DueCycle,
    now: datetime,
    late_after_seconds: float,
    notices: list[_Notice],
    tally: _Tally,
) -> None:
    """Fire the cycle's due steps: updates the cycle (``fired``, state, ``next_fire_at``) and
    appends what is to be announced to ``notices``."""
    fired = list(cycle.fired)
    pending_times: list[datetime] = []
    policy_label = metrics.LABELS.policy(cycle.policy_id)
    for entry in cycle.schedule:
        step, kind = entry["step"], entry["kind"]
        if step in fired:
            continue
        at = datetime.fromisoformat(entry["at"])
        if at > now:
            pending_times.append(at)
            continue
        fired.append(step)
        tally.fired += 1
        lag = (now - at).total_seconds()
        tally.lags.append(lag)
        if kind == "reminder" and cycle.due_at is not None and now >= cycle.due_at:
            continue  # the deadline passed while we were down: the breach notice supersedes it
        if kind == "breach":
            _mark_breached(cycle, at, policy_label, tally)
        else:
            cycle.at_risk = kind == "reminder"
            tally.reminders[(policy_label, kind)] += 1
        notices.append(
            _Notice(
                cycle, kind, step_key(step, cycle.round), at, float(entry["offset"]),
                lag > late_after_seconds, cycle.state,
            )
        )  # fmt: skip
    cycle.fired = fired
    cycle.next_fire_at = min(pending_times, default=None)


def _mark_breached(cycle: _DueCycle, at: datetime, policy_label: str, tally: _Tally) -> None:
    cycle.state = "breached"
    cycle.breached_at = at
    cycle.announced_outcome = "breached"
    if not cycle.outcome_counted:
        cycle.outcome_counted = cycle.count_outcome = True
        tally.breached[(policy_label, metrics.LABELS.team(cycle.team))] += 1


@dataclass(frozen=True, slots=True)
class _LeadRef:
    source: str
    external_id: str
    status: str | None


_CLAIMED = (
    Cycle.id, Cycle.policy_id, Cycle.number, Cycle.owner, Cycle.team, Cycle.state,
    Cycle.started_at, Cycle.due_at, Cycle.target_seconds, Cycle.attempts, Cycle.breached_at,
    Cycle.at_risk, Cycle.announced_outcome, Cycle.schedule, Cycle.fired, Cycle.details,
)  # fmt: skip


async def _fire_batch_rows(
    session: AsyncSession,
    now: datetime,
    policy_set: PolicySet,
    batch_size: int,
    late_after_seconds: float,
) -> tuple[int, int]:
    query = (
        select(*_CLAIMED, Lead.source, Lead.external_id, Lead.status)
        .join(Lead, Lead.id == Cycle.lead_id)
        .where(Cycle.next_fire_at <= now)
        .order_by(Cycle.next_fire_at)
        .limit(batch_size)
    )
    if is_postgresql(session):
        query = query.with_for_update(skip_locked=True, of=Cycle)
    rows = (await session.execute(query)).all()
    notices: list[_Notice] = []
    tally = _Tally()
    leads: dict[int, _LeadRef] = {}
    updates: list[dict[str, Any]] = []
    for row in rows:
        (id_, policy_id, number, owner, team, state, started_at, due_at, target_seconds,
         attempts, breached_at, at_risk, announced_outcome, schedule, fired, details, source,
         external_id, status) = row  # fmt: skip
        details = details or {}
        cycle = _DueCycle(
            id_, policy_id, number, owner, team, state, started_at, due_at, target_seconds,
            attempts, breached_at, at_risk, announced_outcome, schedule, fired,
            int(details.get("round", 0)), bool(details.get("outcome_counted")),
        )  # fmt: skip
        leads[cycle.id] = _LeadRef(source, external_id, status)
        _fire_cycle(cycle, now, late_after_seconds, notices, tally)
        if cycle.count_outcome:
            details = {**details, "outcome_counted": "breached"}
        updates.append({
            "id": cycle.id, "state": cycle.state, "breached_at": cycle.breached_at,
            "at_risk": cycle.at_risk, "announced_outcome": cycle.announced_outcome,
            "fired": cycle.fired, "details": details, "next_fire_at": cycle.next_fire_at,
            "updated_at": now,
        })  # fmt: skip
    await write(session, Write("update", CYCLES, updates))
    outbox: list[dict[str, Any]] = []
    for notice in notices:
        as_fired = replace(notice.cycle, state=notice.state)
        outbox.extend(
            messages_for(
                policy_set, notice.kind, notice.step, as_fired, leads[as_fired.id], notice.at,
                notice.elapsed, notice.late, now,
            )
        )  # fmt: skip
    await enqueue(session, outbox)
    tally.publish()
    return len(rows), tally.fired
