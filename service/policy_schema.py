"""The policy file's shape: one pydantic model per kind of entry, and the parsers for its units.

A model checks what one entry can check on its own (types, units, required keys). What spans
entries — calendar, channel and person references, unique ids, ``env:`` values — is checked by
``service/policy_file.py``, which also turns these models into the frozen values of
``service/sla/policy.py``. Every model forbids unknown keys: a misspelt setting must be an error,
never a rule that silently does not apply.

Union types carry ``Tag`` names in angle brackets (``<name>``); the loader drops them from error
locations so that messages name the file's own keys.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time
from functools import cache
from itertools import pairwise
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    StringConstraints,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from service.sla.types import LEAD_FIELDS

DAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
CHANNEL_TYPES: tuple[str, ...] = ("webhook", "log")
# Named by the contract but not delivered by this version: accepting them would drop notices.
UNDELIVERED_CHANNEL_TYPES: tuple[str, ...] = ("slack", "email")
KNOWN_SOURCES: tuple[str, ...] = (
    "generic",
    "hubspot",
    "pipedrive",
    "salesforce",
    "rdstation",
    "zoho",
    "close",
)
# ``score`` is a number and match/targets/calendar choices compare text, so it is left out.
CHOICE_FIELDS: tuple[str, ...] = tuple(f for f in LEAD_FIELDS if f != "score")
# ``24:00`` cannot be a ``datetime.time``: an interval ending at midnight means "to the end of
# the day" (start < end holds for every other interval, so this reading is unambiguous).
END_OF_DAY = time(0)

_ID = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_DURATION = re.compile(
    r"^(?:(?P<w>\d+)w)?(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$"
)
_UNIT_SECONDS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)\s*%$")
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# --- units ---------------------------------------------------------------------------------


def parse_duration(value: object) -> int:
    """``90s``, ``15m``, ``1h30m``, ``2d``, ``1w`` as whole seconds (a day is 24 hours)."""
    if isinstance(value, str):
        match = _DURATION.match(value.replace(" ", ""))
        if match and any(match.groups()):
            return sum(int(n) * _UNIT_SECONDS[unit] for unit, n in match.groupdict().items() if n)
    raise ValueError(f"invalid duration {value!r} (use 90s, 15m, 1h30m, 2d)")


def parse_positive_duration(value: object) -> int:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"{value!r} must be longer than zero")
    return seconds


def format_duration(seconds: int) -> str:
    """The inverse of ``parse_duration``: whole days from two days up (``7d``), else hours and
    less (``24h``, ``1h30m``), ``0m`` for zero."""
    if seconds >= 2 * 86400 and seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    parts: list[str] = []
    rest = seconds
    for unit in ("h", "m", "s"):
        amount, rest = divmod(rest, _UNIT_SECONDS[unit])
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts) or "0m"


def parse_percent(value: object) -> float:
    """``50%`` as ``0.5``; 0% and 100% are excluded because they would fire at start or breach."""
    match = _PERCENT.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"invalid percentage {value!r} (use e.g. 50%)")
    percent = float(match.group(1))
    if not 0 < percent < 100:
        raise ValueError(f"{value!r} must be between 0% and 100%, both excluded")
    return percent / 100


def parse_date(value: object) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _DATE.match(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"invalid date {value!r} (use YYYY-MM-DD)")


def _minute_of_day(text: str) -> int:
    match = _CLOCK.match(text.strip())
    if match is None:
        raise ValueError
    hour, minute = int(match.group(1)), int(match.group(2))
    if minute > 59 or hour > 24 or (hour == 24 and minute):
        raise ValueError
    return hour * 60 + minute


def parse_interval(value: object) -> tuple[time, time]:
    """``"09:00-12:00"``; ``24:00`` may end an interval and becomes ``END_OF_DAY``."""
    hint = f'invalid interval {value!r} (use e.g. "09:00-12:00")'
    if not isinstance(value, str) or value.count("-") != 1:
        raise ValueError(hint)
    start_text, end_text = value.split("-")
    try:
        start, end = _minute_of_day(start_text), _minute_of_day(end_text)
    except ValueError:
        raise ValueError(hint) from None
    if start == 24 * 60:
        raise ValueError(f"{value!r}: 24:00 can only end an interval")
    if end <= start:
        raise ValueError(f"{value!r} ends before it starts")
    return time(start // 60, start % 60), time(end // 60 % 24, end % 60)


def interval_minutes(interval: tuple[time, time]) -> tuple[int, int]:
    start, end = interval
    end_minute = 24 * 60 if end == END_OF_DAY else end.hour * 60 + end.minute
    return start.hour * 60 + start.minute, end_minute


def format_interval(interval: tuple[time, time]) -> str:
    start, end = interval_minutes(interval)
    return f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"


def first_overlap(
    intervals: tuple[tuple[time, time], ...],
) -> tuple[tuple[time, time], tuple[time, time]] | None:
    """Two intervals that share time, if any; touching ends (12:00-13:00, 13:00-18:00) is fine."""
    ordered = sorted(intervals, key=interval_minutes)
    for earlier, later in pairwise(ordered):
        if interval_minutes(later)[0] < interval_minutes(earlier)[1]:
            return earlier, later
    return None


def parse_days(value: object) -> tuple[int, ...]:
    """``mon``, ``mon-fri``, ``sat-sun``, or a comma list of those, as weekdays (0 = Monday)."""
    hint = f"invalid days {value!r} (use mon … sun, a range like mon-fri, or a list like mon,wed)"
    if not isinstance(value, str):
        raise ValueError(hint)
    days: list[int] = []
    for part in value.lower().replace(" ", "").split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError(hint)
        start, end = DAYS.index(first), DAYS.index(last or first)
        if end < start:
            raise ValueError(f"day range {part!r} runs backwards (split it, e.g. sat-sun and mon)")
        days.extend(range(start, end + 1))
    return tuple(dict.fromkeys(days))


def parse_lead_field(value: object) -> str:
    """A lead field by name, or ``attributes.<name>`` for a CRM's custom field.

    The ``attributes.`` prefix is dropped because ``LeadState.field`` falls back to attributes
    for names that are not lead fields; requiring it in the file keeps ``tema`` from passing as
    a custom field when ``team`` was meant.
    """
    if isinstance(value, str):
        if value in CHOICE_FIELDS:
            return value
        name = value.removeprefix("attributes.")
        if name != value and name and name not in LEAD_FIELDS:
            return name
    raise ValueError(
        f"unknown lead field {value!r} (use {', '.join(CHOICE_FIELDS)} or attributes.<name>)"
    )


def _one_or_many(value: object) -> object:
    """A single value where a list is expected reads as a list of one."""
    return [value] if isinstance(value, str | int) and not isinstance(value, bool) else value


def _as_text(value: object) -> object:
    """CRM ids are strings, but YAML reads ``12345`` as a number: accept it as text."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _check_id(value: str) -> str:
    if not _ID.match(value):
        raise ValueError(
            f"invalid id {value!r} (use lowercase letters, digits, '-' and '_',"
            " starting with a letter or digit)"
        )
    return value


@cache
def supported_countries() -> dict[str, list[str]]:
    """Country codes (with aliases such as UK) → subdivision codes, from ``holidays``."""
    return holidays.list_supported_countries()


def _short_list(items: list[str], limit: int = 15) -> str:
    shown = ", ".join(items[:limit])
    return shown + (", …" if len(items) > limit else "")


Text = Annotated[str, BeforeValidator(_as_text), StringConstraints(min_length=1)]
Texts = Annotated[tuple[Text, ...], BeforeValidator(_one_or_many)]
PolicyId = Annotated[str, AfterValidator(_check_id)]
Duration = Annotated[int, PlainValidator(parse_duration)]
PositiveDuration = Annotated[int, PlainValidator(parse_positive_duration)]
Percent = Annotated[float, PlainValidator(parse_percent)]
Date = Annotated[date, PlainValidator(parse_date)]
Days = Annotated[tuple[int, ...], PlainValidator(parse_days)]
LeadField = Annotated[str, PlainValidator(parse_lead_field)]
Interval = Annotated[tuple[time, time], PlainValidator(parse_interval)]


def _no_overlap(intervals: tuple[tuple[time, time], ...]) -> tuple[tuple[time, time], ...]:
    clash = first_overlap(intervals)
    if clash is not None:
        raise ValueError(f"{format_interval(clash[0])} overlaps {format_interval(clash[1])}")
    return intervals


Intervals = Annotated[
    tuple[Interval, ...], BeforeValidator(_one_or_many), AfterValidator(_no_overlap)
]


def _dates_or_hours(value: object) -> str:
    return "<hours>" if isinstance(value, dict) else "<dates>"


# ``open: ["2026-12-26"]`` (Monday's hours) or ``open: {"2026-12-26": ["09:00-13:00"]}``
OpenDates = Annotated[
    Annotated[tuple[Date, ...], BeforeValidator(_one_or_many), Tag("<dates>")]
    | Annotated[dict[Date, Intervals], Tag("<hours>")],
    Discriminator(_dates_or_hours),
]


# --- models --------------------------------------------------------------------------------


class FileModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HolidaysModel(FileModel):
    country: str
    subdivision: Text | None = None
    categories: tuple[Text, ...] = ("public",)

    @field_validator("country")
    @classmethod
    def _known_country(cls, value: str) -> str:
        supported = supported_countries()
        if value in supported:
            return value
        if value.upper() in supported:
            raise ValueError(f"unknown country {value!r} (did you mean {value.upper()!r}?)")
        raise ValueError(
            f"unknown country {value!r} for the holidays package"
            " (use an ISO 3166 code such as BR, US, RO)"
        )

    @field_validator("subdivision")
    @classmethod
    def _known_subdivision(cls, value: str | None, info: ValidationInfo) -> str | None:
        country = info.data.get("country")
        if value is None or country is None:
            return value
        try:
            holidays.country_holidays(country, subdiv=value)
        except NotImplementedError:
            known = supported_countries().get(country, [])
            if not known:
                raise ValueError(
                    f"the holidays package has no subdivisions for {country}"
                ) from None
            raise ValueError(
                f"unknown subdivision {value!r} of {country} (known: {_short_list(known)})"
            ) from None
        return value

    @field_validator("categories")
    @classmethod
    def _known_categories(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        country = info.data.get("country")
        if country is None:
            return value
        known = holidays.country_holidays(country).supported_categories
        unknown = [c for c in value if c not in known]
        if unknown:
            raise ValueError(
                f"unknown categories {', '.join(map(repr, unknown))} for {country}"
                f" (known: {', '.join(known)})"
            )
        if not value:
            raise ValueError("list at least one category, e.g. [public]")
        return value


class CalendarModel(FileModel):
    timezone: str
    hours: dict[Days, Intervals] | None = None
    holidays: HolidaysModel | None = None
    closed: Annotated[tuple[Date, ...], BeforeValidator(_one_or_many)] = ()
    open: OpenDates = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r} (use an IANA name such as America/Sao_Paulo)"
            ) from None
        return value


class ChannelModel(FileModel):
    type: str
    url: str | None = None
    secret: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _delivered_type(cls, value: str) -> str:
        supported = ", ".join(CHANNEL_TYPES)
        if value in UNDELIVERED_CHANNEL_TYPES:
            raise ValueError(f"{value!r} is not supported yet (supported: {supported})")
        if value not in CHANNEL_TYPES:
            raise ValueError(f"unknown channel type {value!r} (supported: {supported})")
        return value


class PersonModel(FileModel):
    email: str | None = None
    slack: str | None = None
    manager: Text | None = None


class SourceModel(FileModel):
    status_map: dict[Text, Text] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)


class TriggerModel(FileModel):
    status: Texts = ()
    activity: Texts = ()


class RecipientModel(FileModel):
    channel: Text
    to: Text | None = None


class NotifyModel(FileModel):
    reminder: tuple[RecipientModel, ...] = ()
    breach: tuple[RecipientModel, ...] = ()
    escalation: tuple[RecipientModel, ...] = ()
    corrected: tuple[RecipientModel, ...] = ()
    volume_at_risk: tuple[RecipientModel, ...] = ()
    volume_missed: tuple[RecipientModel, ...] = ()


class ReminderModel(FileModel):
    at: Percent | None = None
    before: PositiveDuration | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ReminderModel:
        if (self.at is None) == (self.before is None):
            raise ValueError("give exactly one of 'at' (e.g. 50%) or 'before' (e.g. 10m)")
        return self


class EscalationModel(FileModel):
    after: Duration


class CalendarByModel(FileModel):
    by: LeadField
    map: dict[Text, Text]
    default: Text | None = None


def _name_or_choice(value: object) -> str:
    return "<by>" if isinstance(value, dict) else "<name>"


CalendarRef = Annotated[
    Annotated[Text, Tag("<name>")] | Annotated[CalendarByModel, Tag("<by>")],
    Discriminator(_name_or_choice),
]


def _nonempty(trigger: TriggerModel) -> TriggerModel:
    if not (trigger.status or trigger.activity):
        raise ValueError("must name at least one status or activity")
    return trigger


Required = Annotated[TriggerModel, AfterValidator(_nonempty)]


class PolicyRefsModel(BaseModel):
    """The parts of a policy that name other entries: read on their own when another part of
    the policy is invalid, so that a bad reference is still reported in the same run."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    calendar: CalendarRef | None = None
    notify: NotifyModel = NotifyModel()


class PolicyModel(PolicyRefsModel):
    """What every kind shares; ``kind`` itself is read first to choose the model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: PolicyId
    kind: str = "response"
    match: dict[LeadField, Texts] = Field(default_factory=dict)


class ResponsePolicyModel(PolicyModel):
    start: Required
    stop: Required
    pause: TriggerModel = TriggerModel()
    target: PositiveDuration
    targets: dict[LeadField, dict[Text, PositiveDuration]] = Field(default_factory=dict)
    reminders: tuple[ReminderModel, ...] = ()
    escalations: tuple[EscalationModel, ...] = ()


class AttemptsPolicyModel(PolicyModel):
    start: Required
    stop: TriggerModel = TriggerModel()
    pause: TriggerModel = TriggerModel()
    count: Required
    required: int = Field(ge=1)
    within: PositiveDuration
    guard: TriggerModel = TriggerModel()
    reminders: tuple[ReminderModel, ...] = ()
    escalations: tuple[EscalationModel, ...] = ()


def _statuses_only(trigger: TriggerModel) -> TriggerModel:
    if trigger.activity:
        raise ValueError("a volume policy counts leads entering a status, not activities")
    if not trigger.status:
        raise ValueError("must name at least one status")
    return trigger


class VolumePolicyModel(PolicyModel):
    count: Annotated[TriggerModel, AfterValidator(_statuses_only)]
    per: Literal["owner", "team"]
    period: Literal["week", "month", "quarter"]
    target: int = Field(ge=1)
    targets: dict[Text, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    at_risk_after: Percent | None = None


POLICY_MODELS: dict[str, type[PolicyModel]] = {
    "response": ResponsePolicyModel,
    "attempts": AttemptsPolicyModel,
    "volume": VolumePolicyModel,
}
# Which notices each kind sends: a recipient list for any other would never be used.
NOTIFY_KINDS: dict[str, tuple[str, ...]] = {
    "response": ("reminder", "breach", "escalation", "corrected"),
    "attempts": ("reminder", "breach", "escalation", "corrected"),
    "volume": ("volume_at_risk", "volume_missed", "corrected"),
}


class FileTopModel(FileModel):
    """The sections; each entry is then validated on its own so one bad entry hides no other."""

    calendars: dict[Any, Any] | None = None
    channels: dict[Any, Any] | None = None
    people: dict[Any, Any] | None = None
    teams: list[Any] | None = None
    sources: dict[Any, Any] | None = None
    policies: list[Any] | None = None  # required; checked by the loader to go on without it
