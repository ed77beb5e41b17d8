"""Prometheus metrics. Labels are bounded: never a lead, rep or owner id.

``team`` and ``policy`` values come from configuration; anything else is folded into ``other``
(see ``team_label``) so a CRM sending a new team name cannot explode the series count.
Gauges marked "snapshot" are refreshed by the scheduler from the database, never queried at
scrape time.

Under ``serve --workers N`` the processes share their metrics through files
(``PROMETHEUS_MULTIPROC_DIR``, see ``api_processes``), so any of them answers a scrape for all:
counters and histograms add up, gauges report their largest value.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

OTHER = "other"

WEBHOOK_REQUESTS = Counter(
    "lead_sla_webhook_requests",
    "Inbound webhook requests by source and outcome "
    "(accepted, duplicate, unauthorized, invalid, too_large, unavailable).",
    ["source", "outcome"],
)
EVENTS = Counter(
    "lead_sla_events",
    "Canonical lead events stored, by source and type; type=ignored counts CRM content "
    "accepted but not used.",
    ["source", "type"],
)
WEBHOOK_DURATION = Histogram(
    "lead_sla_webhook_duration_seconds",
    "Time to verify, persist and answer an inbound webhook.",
    ["source"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
CYCLES_STARTED = Counter("lead_sla_cycles_started", "SLA cycles started, by policy.", ["policy"])
CYCLES_MET = Counter(
    "lead_sla_cycles_met",
    "SLA cycles that stopped at or before their deadline.",
    ["policy", "team"],
)
CYCLES_BREACHED = Counter(
    "lead_sla_cycles_breached",
    "SLA cycles still running at their deadline (counted when the breach fires).",
    ["policy", "team"],
)
TIME_TO_STOP = Histogram(
    "lead_sla_time_to_stop_business_seconds",
    "Business seconds from a cycle's start to its stop (e.g. time to first touch).",
    ["policy"],
    buckets=(60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 604800),
)
REMINDERS = Counter(
    "lead_sla_reminders",
    "Reminders and escalations fired into the outbox, by policy and kind.",
    ["policy", "kind"],
)
OPEN_CYCLES = Gauge(
    "lead_sla_open_cycles",
    "Open SLA cycles by policy and state (running, paused, breached-and-still-open); "
    "snapshot refreshed by the scheduler.",
    ["policy", "state"],
    multiprocess_mode="max",
)
AT_RISK_CYCLES = Gauge(
    "lead_sla_at_risk_cycles",
    "Running cycles past their first reminder and not yet due; snapshot refreshed by the "
    "scheduler.",
    ["policy"],
    multiprocess_mode="max",
)
OLDEST_OVERDUE = Gauge(
    "lead_sla_oldest_overdue_timer_seconds",
    "Age of the oldest timer (reminder, breach, escalation) that is due but not fired; "
    "0 when none. Snapshot refreshed by the scheduler.",
    multiprocess_mode="max",
)
TIMER_FIRE_LAG = Histogram(
    "lead_sla_timer_fire_lag_seconds",
    "Delay between a timer's due time and the sweep firing it.",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600),
)
NOTIFICATIONS = Counter(
    "lead_sla_notifications",
    "Outbound notification attempts by channel type and outcome (delivered, retried, dead).",
    ["channel", "outcome"],
)
OUTBOX_PENDING = Gauge(
    "lead_sla_outbox_pending",
    "Outbox rows waiting for delivery, by channel type; snapshot refreshed by the scheduler.",
    ["channel"],
    multiprocess_mode="max",
)
OUTBOX_DEAD = Gauge(
    "lead_sla_outbox_dead",
    "Outbox rows that exhausted their retries, by channel type; snapshot refreshed by the "
    "scheduler.",
    ["channel"],
    multiprocess_mode="max",
)
SCHEDULER_HEARTBEAT = Gauge(
    "lead_sla_scheduler_heartbeat_timestamp_seconds",
    "Unix time of the last completed sweep tick of this worker.",
    multiprocess_mode="max",
)
POLICY_RELOADS = Counter(
    "lead_sla_policy_reloads", "Policy file reloads by outcome (ok, error).", ["outcome"]
)


class LabelSets:
    """The configured label values; anything else becomes ``other``."""

    def __init__(self) -> None:
        self.teams: frozenset[str] = frozenset()
        self.policies: frozenset[str] = frozenset()

    def configure(self, teams: Iterable[str], policies: Iterable[str]) -> None:
        self.teams = frozenset(teams)
        self.policies = frozenset(policies)

    def team(self, team: str | None) -> str:
        return team if team in self.teams else OTHER

    def policy(self, policy: str) -> str:
        return policy if policy in self.policies else OTHER


LABELS = LabelSets()


def precreate_policy_series() -> None:
    """Create every configured policy/team series at zero, so ``rate()`` and ``increase()`` see
    the first real increment instead of a series that appears out of nowhere."""
    teams = (*sorted(LABELS.teams), OTHER)
    for policy in LABELS.policies:
        CYCLES_STARTED.labels(policy)
        TIME_TO_STOP.labels(policy)
        for kind in ("reminder", "escalation"):
            REMINDERS.labels(policy, kind)
        for team in teams:
            CYCLES_MET.labels(policy, team)
            CYCLES_BREACHED.labels(policy, team)


WEBHOOK_OUTCOMES = ("accepted", "duplicate", "unauthorized", "invalid", "too_large", "unavailable")


EVENT_TYPES = (
    "lead.created", "lead.status_changed", "lead.assigned", "lead.activity", "lead.updated",
    "lead.deleted", "ignored",
)  # fmt: skip


def precreate_source_series(sources: Iterable[str]) -> None:
    for source in sources:
        WEBHOOK_DURATION.labels(source)
        for outcome in WEBHOOK_OUTCOMES:
            WEBHOOK_REQUESTS.labels(source, outcome)
        for event_type in EVENT_TYPES:
            EVENTS.labels(source, event_type)
    for outcome in ("ok", "error"):
        POLICY_RELOADS.labels(outcome)
    for channel in ("webhook", "log"):
        for outcome in ("delivered", "retried", "dead"):
            NOTIFICATIONS.labels(channel, outcome)


def exposition() -> bytes:
    """The text a scrape of ``/metrics`` returns: this process's metrics, or all the API
    processes' when they share them."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return generate_latest()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)
