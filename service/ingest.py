"""Storing a delivery and re-deriving what it changes, in the caller's transaction.

One transaction per delivery: the events, the lead rows, the cycles and any correction notices
commit together or not at all, so a 202 always means "stored and applied".
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter

from sqlalchemy.ext.asyncio import AsyncSession

from service import metrics
from service.bulk import write
from service.cycle_rows import (
    CycleRow,
    CyclesByLead,
    cycle_writes,
    free_cycle_keys,
    lock_cycles,
    pause_json,
)
from service.event_log import (
    LeadRow,
    append_events,
    create_leads,
    lead_values,
    lead_writes,
    load_histories,
    lock_leads,
    lock_leads_by_crm_id,
)
from service.outbox import enqueue, messages_for, step_key
from service.policies import LoadedPolicies
from service.sla.engine import CycleResult, derive_cycles, next_fire_at
from service.sla.types import LeadEvent, LeadState, lead_states, sort_and_dedupe
from service.status_entries import StatusChanges, status_entry_writes


@dataclass(frozen=True, slots=True)
class IngestResult:
    accepted: int
    duplicates: int


@dataclass(frozen=True, slots=True)
class RawDelivery:
    headers: Mapping[str, str]
    body: bytes


async def store_delivery(
    session: AsyncSession,
    source: str,
    events: Sequence[LeadEvent],
    raw: RawDelivery | None,
    now: datetime,
    policies: LoadedPolicies,
) -> IngestResult:
    """Append new events to the log (redeliveries are no-ops) and re-derive affected leads."""
    unique: dict[str, LeadEvent] = {}
    for event in events:  # a copy repeated in one batch is a redelivery: the first one wins
        unique.setdefault(event.event_id, event)
    delivered: dict[str, list[LeadEvent]] = defaultdict(list)
    for event in unique.values():
        delivered[event.lead.id].append(event)
    stored = await lock_leads_by_crm_id(session, source, delivered)
    created = await create_leads(
        session, source, {ext: evs for ext, evs in delivered.items() if ext not in stored}
    )
    raced = [ext for ext in delivered if ext not in stored and ext not in created]
    if raced:  # created by a concurrent delivery since we looked: wait for it, then read it
        stored.update(await lock_leads_by_crm_id(session, source, raced))
    leads = {**stored, **created}
    appended = await append_events(
        session,
        source,
        unique.values(),
        {ext: lead.id for ext, lead in leads.items()},
        (raw.headers, raw.body) if raw else None,
        now,
        histories_of=[lead.id for lead in stored.values()],
    )
    inserted, histories = appended.inserted, appended.histories
    new_events: dict[int, set[str]] = defaultdict(set)
    counted: Counter[str] = Counter()
    for event in unique.values():
        if event.event_id in inserted:
            counted[event.type] += 1
            new_events[leads[event.lead.id].id].add(event.event_id)
    for event_type, count in counted.items():
        metrics.EVENTS.labels(source, event_type).inc(count)
    # Leads created just now have no other history and no cycles: nothing to read back.
    before = [lead for lead in stored.values() if lead.id in new_events]
    if appended.cycles is not None:
        cycles = appended.cycles
    else:
        cycles = await lock_cycles(session, [lead.id for lead in before])
    for lead in created.values():
        histories[lead.id] = sort_and_dedupe(
            [event for event in delivered[lead.external_id] if event.event_id in inserted]
        )
    await _rederive(
        session, [*before, *created.values()], histories, cycles, new_events, now, policies
    )
    return IngestResult(accepted=len(inserted), duplicates=len(events) - len(inserted))


async def rederive_leads(
    session: AsyncSession,
    lead_pks: Iterable[int],
    now: datetime,
    policies: LoadedPolicies,
    recompute: bool = False,
) -> int:
    """Fold each lead's whole history again and reconcile its lead row and cycles.

    Open cycles that started under an earlier policy version keep the target they started with,
    unless ``recompute`` asks to move them onto the loaded version.

    Returns how many cycles changed (started, stopped, moved deadline or state).
    """
    leads = await lock_leads(session, lead_pks)
    pks = [lead.id for lead in leads]
    histories = await load_histories(session, pks)
    cycles = await lock_cycles(session, pks)
    return await _rederive(session, leads, histories, cycles, {}, now, policies, recompute)


async def _rederive(
    session: AsyncSession,
    leads: Sequence[LeadRow],
    histories: Mapping[int, list[LeadEvent]],
    cycles: CyclesByLead,
    new_events: Mapping[int, set[str]],
    now: datetime,
    policies: LoadedPolicies,
    recompute: bool = False,
) -> int:
    """Fold each lead's history onto its row and cycles, then write what changed; ``new_events``
    are the ids this delivery added, which is all that can have changed the status entries."""
    changed = 0
    status_changes = {}
    rows: list[CycleRow] = []
    for lead in leads:
        history = histories.get(lead.id, [])
        states = lead_states(history)  # folded once, read by the lead row and every policy
        lead.update(lead_values(lead.external_id, history, states))
        changed += await _reconcile_cycles(
            session, lead, history, states, cycles.get(lead.id, {}), rows, now, policies,
            recompute,
        )  # fmt: skip
        if lead.id in new_events:
            status_changes[lead.id] = StatusChanges(history, states, new_events[lead.id])
    await free_cycle_keys(session, rows)
    entries = await status_entry_writes(session, status_changes)
    await write(session, lead_writes(leads), *cycle_writes(rows), entries)
    return changed


async def _reconcile_cycles(
    session: AsyncSession,
    lead: LeadRow,
    events: Sequence[LeadEvent],
    states: Sequence[LeadState],
    existing: dict[tuple[str, int], CycleRow],
    to_save: list[CycleRow],
    now: datetime,
    policies: LoadedPolicies,
    recompute: bool = False,
) -> int:
    """Bring the lead's cycle rows in line with a fresh fold; every row it keeps, changes, adds
    or deletes is appended to ``to_save``.

    A row is the cycle its start event began, not a position: when a late event adds an earlier
    cycle, the numbers shift but each row keeps its own history — what fired, what was
    announced, the target it was pinned to — so a breach announced for one cycle is never
    "corrected" by, or fired again for, another.
    """
    changed = 0
    derived: list[tuple[CycleResult, CycleRow | None]] = []
    leftovers: list[CycleRow] = []
    stored: dict[str, list[CycleRow]] = defaultdict(list)
    for (policy_id, _), row in existing.items():
        stored[policy_id].append(row)
    for policy in policies.policy_set.policies:
        rows = stored.pop(policy.id, [])
        results = derive_cycles(policy, events, now, policies.calendars, states=states)
        if not rows:  # the common case of a lead's first cycles: nothing to match or pin
            derived.extend((result, None) for result in results)
            continue
        matched = _match_rows(results, rows)
        pinned = {
            result.number: row.target_seconds or 0
            for result, row in zip(results, matched, strict=True)
            if row is not None
            and row.policy_version != policies.version
            and not (recompute and row.open)
        }
        if pinned:  # the numbering and start events do not depend on targets: same matching
            results = derive_cycles(policy, events, now, policies.calendars, pinned, states)
        derived.extend(zip(results, matched, strict=True))
        used = {id(row) for row in matched if row is not None}
        leftovers.extend(row for row in rows if id(row) not in used)
    for row in leftovers:
        # A late event can mean this cycle never started (cycles of policies no longer loaded
        # stay as history, and were left in ``stored``).
        row.deleted = True
        to_save.append(row)
        changed += 1
        if row.announced_outcome == "breached":
            await _announce_void(session, row, lead, now, policies)
    for result, kept in derived:
        if kept is not None:
            kept.number = result.number  # a late event can add an earlier cycle
    for result, found in derived:
        if found is None:
            row = _new_cycle(lead, result, policies.version, now)
            metrics.CYCLES_STARTED.labels(metrics.LABELS.policy(result.policy_id)).inc()
            changed += 1
        else:
            row = found
            if recompute and row.open and row.policy_version != policies.version:
                row.policy_version = policies.version
            if _apply_result(row, result, now):
                changed += 1
        await _announce_outcome(session, row, result, lead, now, policies)
        to_save.append(row)
    return changed


def _match_rows(results: Sequence[CycleResult], rows: Sequence[CycleRow]) -> list[CycleRow | None]:
    """The stored row of each derived cycle: the one its start event began; failing that (a
    late event moved the start, e.g. an older "mql" re-sent), the row in the same position."""
    by_start = {row.details.get("start_event_id"): row for row in rows}
    matched: list[CycleRow | None] = [by_start.pop(r.start_event_id, None) for r in results]
    by_number = {row.number: row for row in by_start.values()}
    return [
        row if row is not None else by_number.pop(result.number, None)
        for result, row in zip(results, matched, strict=True)
    ]


def _new_cycle(lead: LeadRow, result: CycleResult, version: str, now: datetime) -> CycleRow:
    row = CycleRow(
        lead_id=lead.id,
        policy_id=result.policy_id,
        number=result.number,
        policy_version=version,
        kind=result.kind,
        started_at=result.started_at,
    )
    _apply_result(row, result, now)
    return row


# The columns a fold derives, in the order ``_apply_result`` lists them.
_DERIVED = (
    "state", "open", "owner", "team", "started_at", "due_at", "stopped_at", "breached_at",
    "target_seconds", "attempts", "schedule", "next_fire_at", "details",
)  # fmt: skip
_derived_values = attrgetter(*_DERIVED)


def _apply_result(row: CycleRow, result: CycleResult, now: datetime) -> bool:
    """Copy a derived cycle onto its row; True if anything a user would see changed.

    Only values that differ are assigned, so an event that leaves a cycle as it was costs no
    UPDATE. The elapsed time stored for an open cycle is therefore the one of its last change;
    the API, explain and the sweep's notices count the current one.
    """
    before = (row.state, row.due_at, row.stopped_at, row.owner) if row.id else None
    derived = (
        result.state,
        result.open,
        result.owner,
        result.team,
        result.started_at,
        result.due_at,
        result.stopped_at,
        result.breached_at,
        result.target_seconds,
        result.attempts,
        [{"step": t.step, "kind": t.kind, "at": t.at.isoformat(), "offset": t.offset}
         for t in result.timers],
        next_fire_at(result.timers, row.fired or []) if result.open else None,
        {
            **(row.details or {}),
            "calendar": result.calendar,
            "start_event_id": result.start_event_id,
            "stop_event_id": result.stop_event_id,
            "stop_reason": result.stop_reason,
            "required": result.required,
            "pauses": [pause_json(pause) for pause in result.pauses],
        },
    )  # fmt: skip
    stored = _derived_values(row)
    changed = derived != stored  # one comparison for the common case of nothing new
    if changed:
        for name, value, old in zip(_DERIVED, derived, stored, strict=True):
            if value != old:
                setattr(row, name, value)
    if changed or row.elapsed_business_seconds is None:
        row.elapsed_business_seconds = result.elapsed_business_seconds
        row.updated_at = now
    return before != (row.state, row.due_at, row.stopped_at, row.owner)


async def _announce_void(
    session: AsyncSession, row: CycleRow, lead: LeadRow, now: datetime, policies: LoadedPolicies
) -> None:
    """Withdraw a breach already announced for a cycle a late event showed never started: one
    ``sla.corrected`` whose state is ``void``, to whoever hears of corrections."""
    row.state = "void"  # the row is being deleted; this is only what the notice shows
    round_ = int(row.details.get("round", 0))
    await _enqueue_correction(session, row, round_, lead, now, 0.0, policies)


async def _enqueue_correction(
    session: AsyncSession,
    cycle: CycleRow,
    round_: int,
    lead: LeadRow,
    now: datetime,
    elapsed: float,
    policies: LoadedPolicies,
) -> None:
    """One ``sla.corrected`` per recipient, showing ``cycle`` as it is now."""
    await enqueue(
        session,
        messages_for(
            policies.policy_set, "corrected", step_key("corrected", round_), cycle, lead, now,
            elapsed, False, now,
        ),
    )  # fmt: skip


async def _announce_outcome(
    session: AsyncSession,
    row: CycleRow,
    result: CycleResult,
    lead: LeadRow,
    now: datetime,
    policies: LoadedPolicies,
) -> None:
    """Count outcomes once, and correct a breach already announced that a late event undid."""
    details = dict(row.details)
    outcome = None
    if result.state == "met" and not details.get("outcome_counted"):
        outcome = metrics.CYCLES_MET
    elif result.state == "breached" and not result.open and not details.get("outcome_counted"):
        outcome = metrics.CYCLES_BREACHED
    if outcome is not None:
        details["outcome_counted"] = result.state
        policy_label = metrics.LABELS.policy(row.policy_id)
        outcome.labels(policy_label, metrics.LABELS.team(row.team)).inc()
        metrics.TIME_TO_STOP.labels(policy_label).observe(result.elapsed_business_seconds)
    if row.announced_outcome == "breached" and result.state != "breached":
        # A late event undid a breach already announced: say so. Met is final; a clock running
        # again (a late pause moved its deadline) is re-armed, and whatever falls due anew fires
        # again as a new round of notices.
        round_ = int(details.get("round", 0))
        await _enqueue_correction(
            session, row, round_, lead, now, result.elapsed_business_seconds, policies
        )
        if result.state == "met":
            row.announced_outcome = "met"
        else:
            row.announced_outcome = None
            details["round"] = round_ + 1
            again = {timer.step for timer in result.timers if timer.at > now}
            row.fired = [step for step in row.fired if step not in again]
            row.next_fire_at = next_fire_at(result.timers, row.fired)
    row.details = details
