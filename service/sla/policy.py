"""The policy model: what marketing and sales agreed, as plain immutable values.

``service/policy_file.py`` builds these from YAML (with file/line errors); the engine only reads
them. Durations are whole seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, time
from typing import Any, Literal

PolicyKind = Literal["response", "attempts", "volume"]
Period = Literal["week", "month", "quarter"]
NotifyKind = Literal[
    "reminder", "breach", "escalation", "corrected", "volume_at_risk", "volume_missed"
]


@dataclass(frozen=True, slots=True)
class Trigger:
    """A set of statuses entered and/or activity kinds that make something happen."""

    status: frozenset[str] = frozenset()
    activity: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.status or self.activity)


@dataclass(frozen=True, slots=True)
class Reminder:
    """Fires once per cycle: at a fraction of the target, or a duration before the deadline."""

    at_fraction: float | None = None
    before_seconds: int | None = None

    @property
    def label(self) -> str:
        if self.at_fraction is not None:
            return f"at {self.at_fraction * 100:g}%"
        return f"{self.before_seconds}s before"


@dataclass(frozen=True, slots=True)
class Escalation:
    """Fires once per cycle, this much business time after the deadline (0 = at breach)."""

    after_seconds: int


@dataclass(frozen=True, slots=True)
class Recipient:
    """``to`` is ``owner``, ``manager`` (via ``people``), a person id, or ``None``: the channel's
    own destination."""

    channel: str
    to: str | None = None


@dataclass(frozen=True, slots=True)
class CalendarChoice:
    """Which calendar a lead's clock runs on: by a lead field's value, else the default.
    ``default=None`` means 24x7."""

    default: str | None = None
    by_field: str | None = None
    by_value: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Policy:
    id: str
    kind: PolicyKind = "response"
    match: Mapping[str, frozenset[str]] = field(default_factory=dict)
    start: Trigger = Trigger()
    stop: Trigger = Trigger()
    pause: Trigger = Trigger()
    target_seconds: int | None = None
    # lead field -> field value -> target seconds, e.g. {"priority": {"high": 900}}
    targets: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    calendar: CalendarChoice = CalendarChoice()
    reminders: tuple[Reminder, ...] = ()
    escalations: tuple[Escalation, ...] = ()
    notify: Mapping[str, tuple[Recipient, ...]] = field(default_factory=dict)  # NotifyKind -> ...
    # kind: attempts
    count: Trigger = Trigger()
    required: int | None = None
    within_seconds: int | None = None
    guard: Trigger = Trigger()
    # kind: volume
    per: Literal["owner", "team"] | None = None
    period: Period | None = None
    volume_target: int | None = None
    volume_targets: Mapping[str, int] = field(default_factory=dict)  # owner/team -> target
    at_risk_after: float = 0.5  # fraction of the period after which a projected miss is announced
    line: int | None = None  # where the policy starts in its file, for messages


@dataclass(frozen=True, slots=True)
class CalendarSpec:
    """Business hours in an IANA zone. ``hours`` maps weekday (0 = Monday) to local intervals;
    ``None`` means open around the clock (holidays and closed dates still apply)."""

    name: str
    timezone: str = "UTC"
    hours: Mapping[int, tuple[tuple[time, time], ...]] | None = None
    holidays_country: str | None = None
    holidays_subdivision: str | None = None
    # the holidays package's categories, e.g. ("public", "optional") to close on Brazil's
    # Carnival, which is an optional day off there rather than a public holiday
    holidays_categories: tuple[str, ...] = ("public",)
    closed: frozenset[date] = frozenset()
    # extra open dates (e.g. a Saturday campaign) with their local intervals
    open: Mapping[date, tuple[tuple[time, time], ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """A notification destination. ``url``/``secret`` are already resolved from ``env:``."""

    name: str
    type: str  # webhook | log (slack, email: not yet delivered, rejected by validation)
    url: str | None = None
    secret: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Person:
    id: str
    email: str | None = None
    slack: str | None = None
    manager: str | None = None


@dataclass(frozen=True, slots=True)
class SourceSettings:
    """Per inbound source overrides, e.g. ``status_map: {customstage: mql}``."""

    status_map: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PolicySet:
    """A whole policy file. ``version`` is a digest of its contents: cycles record it."""

    version: str
    policies: tuple[Policy, ...] = ()
    calendars: Mapping[str, CalendarSpec] = field(default_factory=dict)
    channels: Mapping[str, ChannelSpec] = field(default_factory=dict)
    people: Mapping[str, Person] = field(default_factory=dict)
    teams: frozenset[str] = frozenset()  # label values for metrics; others fold into "other"
    sources: Mapping[str, SourceSettings] = field(default_factory=dict)

    def policy(self, policy_id: str) -> Policy | None:
        return next((p for p in self.policies if p.id == policy_id), None)
