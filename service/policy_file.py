"""The SLA policy file: YAML in, a ``PolicySet`` out — or every problem as ``FILE:LINE: message``.

An operator edits this file by hand and reloads it into a running service, so a mistake must be
found before anything runs on it, all at once, and pointed at precisely: each message names the
line and the key path (``policies[0].target: invalid duration '1x' …``). To get there the YAML is
composed into nodes and turned into plain values while the line of every key and list item is
recorded by path; each entry is validated with the models of ``service/policy_schema.py``; and
the paths of the errors found are looked up in that table.

YAML is read with YAML 1.2 scalars: ``no``/``on`` stay text (``country: NO`` is Norway) and
``09:00`` or ``2026-12-24`` stay text to be parsed by the schema, not turned into sexagesimal
numbers or dates.

``env:NAME`` values in ``channels`` are resolved against the environment given, so secrets stay
out of the file; messages name the variable, never its value.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import hashlib
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, time
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from service.policy_schema import (
    DAYS,
    END_OF_DAY,
    KNOWN_SOURCES,
    NOTIFY_KINDS,
    POLICY_MODELS,
    AttemptsPolicyModel,
    CalendarModel,
    ChannelModel,
    FileTopModel,
    PersonModel,
    PolicyModel,
    PolicyRefsModel,
    ResponsePolicyModel,
    SourceModel,
    TriggerModel,
    VolumePolicyModel,
    first_overlap,
    format_duration,
    format_interval,
)
from service.sla.policy import (
    CalendarChoice,
    CalendarSpec,
    ChannelSpec,
    Escalation,
    Person,
    Policy,
    PolicySet,
    Recipient,
    Reminder,
    SourceSettings,
    Trigger,
)

__all__ = [
    "PolicyError",
    "PolicyFileError",
    "load_policy_file",
    "load_policy_text",
    "summarize",
]

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)

# Aliases can make a small file expand without bound (and even refer to themselves).
_MAX_VALUES = 100_000
_MAX_DEPTH = 64
_ENV_REF = re.compile(r"^env:(.*)$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESERVED_RECIPIENTS = ("owner", "manager")


@dataclass(frozen=True, slots=True)
class PolicyError:
    """One problem; ``line`` is 1-based, 0 when it concerns the file as a whole (unreadable)."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class PolicyFileError(Exception):
    """A policy file that cannot be used; ``errors`` holds every problem found, in line order."""

    def __init__(self, errors: list[PolicyError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(error) for error in errors))


# --- public API ----------------------------------------------------------------------------


def load_policy_file(path: str | Path, env: Mapping[str, str] | None = None) -> PolicySet:
    filename = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PolicyFileError(
            [PolicyError(filename, 0, f"cannot read the file: {reason}")]
        ) from exc
    return load_policy_text(text, filename, os.environ if env is None else env)


def load_policy_text(text: str, filename: str, env: Mapping[str, str]) -> PolicySet:
    report = _Report(filename)
    data = _read_yaml(text, report)
    top = _read_sections(report, data) if data is not _INVALID else None
    if top is None:
        raise PolicyFileError(report.sorted_errors())
    sections = _Builder(report, env, top)
    policy_set = PolicySet(
        version=hashlib.sha256(text.encode("utf-8")).hexdigest()[:12],
        calendars=sections.calendars(),
        channels=sections.channels(),
        people=sections.people(),
        teams=sections.teams(),
        sources=sections.sources(),
        policies=sections.policies(),
    )
    if report.errors:
        raise PolicyFileError(report.sorted_errors())
    return policy_set


def summarize(policy_set: PolicySet) -> list[str]:
    """One line per policy, for ``lead-sla policies check``."""
    return [_summary(policy) for policy in policy_set.policies]


def _read_sections(report: _Report, data: Any) -> FileTopModel | None:
    """The top level; a bad section is reported and left out so the others are still checked."""
    top = report.validate(FileTopModel, data, ())
    if top is None and isinstance(data, dict):
        usable = {}
        for key, value in data.items():
            try:
                FileTopModel.model_validate({key: value})
            except ValidationError:
                continue
            usable[key] = value
        top = FileTopModel.model_validate(usable)
    if isinstance(data, dict) and "policies" not in data:
        report.add(("policies",), "required (a list of policies)")
    return top


# --- errors and lines ----------------------------------------------------------------------


class _Report:
    """Collects errors; knows the line of every key and list item of the file by path."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.lines: dict[Loc, int] = {}
        self.errors: list[PolicyError] = []

    def line_of(self, path: Loc) -> int:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return 1

    def add(self, path: Loc, message: str, line: int | None = None) -> None:
        where = _format_path(path)
        self.errors.append(
            PolicyError(
                self.filename,
                self.line_of(path) if line is None else line,
                f"{where}: {message}" if where else message,
            )
        )

    def sorted_errors(self) -> list[PolicyError]:
        return sorted(self.errors, key=lambda error: error.line)

    def validate(self, model: type[M], data: Any, path: Loc) -> M | None:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                loc = tuple(
                    part
                    for part in error["loc"]
                    if not (isinstance(part, str) and (part.startswith("<") or part == "[key]"))
                )
                self.add(path + loc, _describe(model, loc, error))
            return None


def _format_path(path: Loc) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            name = part if re.fullmatch(r"[\w./:-]+", part) else repr(part)
            text += f".{name}" if text else name
    return text


def _describe(model: type[BaseModel], loc: Loc, error: ErrorDetails) -> str:
    """A pydantic error in the file's terms: what was expected and what was found."""
    kind, value = error["type"], error.get("input")
    if kind == "value_error":
        return str(error.get("ctx", {}).get("error", error["msg"]))
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return _unknown_key(model, loc)
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        message = "should be a mapping"
    elif kind in ("list_type", "tuple_type"):
        message = "should be a list"
    elif kind == "string_type":
        message = "should be text"
    else:
        message = error["msg"].replace("Input should be", "should be", 1)
    return f"{message}, got {_show(value)}"


def _show(value: object) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return repr(value)


def _unknown_key(model: type[BaseModel], loc: Loc) -> str:
    key = loc[-1] if loc else ""
    if issubclass(model, PolicyModel) and len(loc) == 1:
        kinds = [kind for kind, other in POLICY_MODELS.items() if key in other.model_fields]
        if kinds:
            kind = next(kind for kind, other in POLICY_MODELS.items() if other is model)
            return f"does not apply to {kind} policies (only to {' and '.join(kinds)})"
    allowed = _keys_at(model, loc[:-1])
    close = difflib.get_close_matches(str(key), allowed, n=1)
    if close:
        return f"unknown key (did you mean {close[0]!r}?)"
    return f"unknown key (expected {', '.join(allowed)})" if allowed else "unknown key"


def _keys_at(model: type[BaseModel], loc: Loc) -> list[str]:
    """The keys the model accepts at ``loc``, found by following its annotations."""
    annotation: Any = model
    for part in loc:
        annotation = _step(annotation, part)
    found = _model_in(annotation)
    return list(found.model_fields) if found else []


def _step(annotation: Any, part: str | int) -> Any:
    found = _model_in(annotation)
    if found is not None:
        field = found.model_fields.get(str(part))
        return field.annotation if field else None
    for candidate in _flatten(annotation):
        origin, args = get_origin(candidate), get_args(candidate)
        if origin in (tuple, list) and args and isinstance(part, int):
            return args[0]
        if origin is dict and len(args) == 2:
            return args[1]
    return None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    for candidate in _flatten(annotation):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _flatten(annotation: Any) -> list[Any]:
    """The alternatives of a possibly annotated, possibly optional type."""
    if get_origin(annotation) is typing.Annotated:
        return _flatten(get_args(annotation)[0])
    if get_origin(annotation) in (typing.Union, types.UnionType):
        return [flat for arg in get_args(annotation) for flat in _flatten(arg)]
    return [annotation]


# --- YAML with lines -----------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """YAML 1.2 core scalars: only true/false are booleans, only decimal digits are integers."""


_Loader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in (
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("int", r"^[-+]?[0-9]+$", "-+0123456789"),
    (
        "float",
        r"^[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+(?:\.[0-9]*)?[eE][-+]?[0-9]+)$",
        "-+.0123456789",
    ),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("merge", r"^<<$", "<"),
):
    _Loader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_pattern), list(_first))


def _decimal_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    """Leading zeros do not make an octal number (``010`` is ten), as in YAML 1.2."""
    assert isinstance(node, yaml.ScalarNode)
    return int(loader.construct_scalar(node))


_Loader.add_constructor("tag:yaml.org,2002:int", _decimal_int)

_INVALID = object()
_MERGE = "tag:yaml.org,2002:merge"


class _TooLarge(Exception):
    def __init__(self, line: int) -> None:
        self.line = line


def _read_yaml(text: str, report: _Report) -> Any:
    """Plain values of the document (``_INVALID`` if it is not YAML), lines into ``report``."""
    loader: _Loader | None = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
        if node is None:
            report.add((), "the file is empty (expected a mapping with 'policies')")
            return _INVALID
        return _NodeReader(loader, report).read(node, ())
    except yaml.MarkedYAMLError as exc:
        report.add((), f"YAML syntax error: {_syntax_problem(exc)}", _line(exc.problem_mark))
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        report.add((), f"YAML syntax error: {exc.reason} (character #x{exc.character:04x})", line)
    except _TooLarge as exc:
        report.add((), "the file expands to too many values (check anchors and aliases)", exc.line)
    finally:
        if loader is not None:
            loader.dispose()
    return _INVALID


def _syntax_problem(exc: yaml.MarkedYAMLError) -> str:
    """The problem, and where the construct it breaks began when that is on another line."""
    problem = exc.problem or "invalid YAML"
    if not exc.context:
        return problem
    context = exc.context
    if exc.context_mark is not None and exc.context_mark.line != _line(exc.problem_mark) - 1:
        context += f" at line {_line(exc.context_mark)}"
    if problem.startswith("but "):  # PyYAML splits "expected X, but found Y" in two
        return f"{context}, {problem}"
    return f"{problem} ({context})" if context != exc.context else f"{context}: {problem}"


def _line(mark: yaml.Mark | None) -> int:
    return mark.line + 1 if mark is not None else 1


class _NodeReader:
    def __init__(self, loader: _Loader, report: _Report) -> None:
        self.loader = loader
        self.report = report
        self.count = 0
        self.open_nodes: set[int] = set()  # collections being read: an alias to one is a loop

    def read(self, node: yaml.Node, path: Loc) -> Any:
        self.count += 1
        if self.count > _MAX_VALUES or len(path) > _MAX_DEPTH:
            raise _TooLarge(node.start_mark.line + 1)
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        if id(node) in self.open_nodes:
            self.report.add(path, "an alias refers to a value that contains it")
            return None
        self.open_nodes.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            items = []
            for index, item in enumerate(node.value):
                self.report.lines[(*path, index)] = item.start_mark.line + 1
                items.append(self.read(item, (*path, index)))
            return items
        finally:
            self.open_nodes.discard(id(node))

    def _scalar(self, node: yaml.ScalarNode, path: Loc) -> Any:
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self.report.add(path, str(getattr(exc, "problem", exc)), node.start_mark.line + 1)
            return None

    def _mapping(self, node: yaml.MappingNode, path: Loc) -> dict[Any, Any]:
        """Merged keys (``<<: *defaults``) first, so the mapping's own keys override them."""
        merged: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE:
                continue
            sources = (
                value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            )
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    self.report.add(path, "'<<' merges only mappings", source.start_mark.line + 1)
                    continue
                source_value = self.read(source, path)
                for key, value in (source_value or {}).items():
                    merged.setdefault(key, value)
        own: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                continue
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                self.report.add(path, "a key must be a plain value, not a list or mapping", line)
                continue
            key = self.read(key_node, path)
            if key in own:
                first = self.report.lines[(*path, key)]
                self.report.add((*path, key), f"duplicate key (first at line {first})", line)
                continue
            self.report.lines[(*path, key)] = line
            own[key] = self.read(value_node, (*path, key))
        return {**merged, **own}


# --- from models to the policy model -------------------------------------------------------


class _Builder:
    """Validates each entry of each section and converts what is valid.

    Names are taken from the file as written, whether or not their entry is valid, so an
    invalid calendar yields one error, not a second "unknown calendar" at every reference.
    """

    def __init__(self, report: _Report, env: Mapping[str, str], top: FileTopModel) -> None:
        self.report = report
        self.env = env
        self.top = top
        self.calendar_names = {str(k) for k in top.calendars or {}}
        self.channel_names = {str(k) for k in top.channels or {}}
        self.person_ids = {str(k) for k in top.people or {}}

    def _entries(self, section: str, model: type[M]) -> Iterable[tuple[str, Loc, M]]:
        raw: dict[Any, Any] = getattr(self.top, section) or {}
        for key, value in raw.items():
            path: Loc = (section, key)
            if not isinstance(key, str | int) or isinstance(key, bool) or key == "":
                self.report.add(path, "a name must be text")
                continue
            entry = self.report.validate(model, {} if value is None else value, path)
            if entry is not None:
                yield str(key), path, entry

    # calendars

    def calendars(self) -> dict[str, CalendarSpec]:
        return {
            name: self._calendar(name, path, entry)
            for name, path, entry in self._entries("calendars", CalendarModel)
        }

    def _calendar(self, name: str, path: Loc, model: CalendarModel) -> CalendarSpec:
        hours: dict[int, tuple[tuple[time, time], ...]] | None = None
        if model.hours is not None:
            week: dict[int, list[tuple[time, time]]] = {day: [] for day in range(7)}
            for days, intervals in model.hours.items():
                for day in days:
                    week[day].extend(intervals)
            hours = {}
            for day, day_intervals in week.items():
                clash = first_overlap(tuple(day_intervals))
                if clash:
                    self.report.add(
                        (*path, "hours"),
                        f"{DAYS[day]}: {format_interval(clash[0])} overlaps"
                        f" {format_interval(clash[1])}",
                    )
                hours[day] = tuple(sorted(day_intervals))
            if not any(hours.values()):
                self.report.add((*path, "hours"), "no open time in the week")
        opened = self._open_dates(path, model, hours)
        for both in sorted(set(model.closed) & set(opened)):
            self.report.add((*path, "open"), f"{both} is also listed in 'closed'")
        return CalendarSpec(
            name=name,
            timezone=model.timezone,
            hours=hours,
            holidays_country=model.holidays.country if model.holidays else None,
            holidays_subdivision=model.holidays.subdivision if model.holidays else None,
            holidays_categories=model.holidays.categories if model.holidays else ("public",),
            closed=frozenset(model.closed),
            open=opened,
        )

    def _open_dates(
        self,
        path: Loc,
        model: CalendarModel,
        hours: Mapping[int, tuple[tuple[time, time], ...]] | None,
    ) -> dict[date, tuple[tuple[time, time], ...]]:
        """A bare date opens with Monday's hours (all day on a calendar without hours)."""
        if isinstance(model.open, dict):
            return dict(model.open)
        monday = hours[0] if hours is not None else ((time(0), END_OF_DAY),)
        if model.open and not monday:
            self.report.add(
                (*path, "open"),
                "a date without hours opens with Monday's, and Monday has none:"
                ' give them, e.g. {"2026-12-26": ["09:00-13:00"]}',
            )
        return dict.fromkeys(model.open, monday)

    # channels, people, teams, sources

    def channels(self) -> dict[str, ChannelSpec]:
        channels = {}
        for name, path, entry in self._entries("channels", ChannelModel):
            url = self._resolve(entry.url, (*path, "url"))
            secret = self._resolve(entry.secret, (*path, "secret"))
            options = {k: self._resolve(v, (*path, "options", k)) for k, v in entry.options.items()}
            if entry.type == "log":
                for key, value in (("url", entry.url), ("secret", entry.secret)):
                    if value is not None:
                        self.report.add((*path, key), "not used by a log channel")
            elif entry.type == "webhook":
                self._check_webhook(path, entry, url, secret)
            channels[name] = ChannelSpec(
                name=name, type=entry.type, url=url, secret=secret, options=options
            )
        return channels

    def _check_webhook(
        self, path: Loc, entry: ChannelModel, url: str | None, secret: str | None
    ) -> None:
        if entry.url is None:
            self.report.add((*path, "url"), "required for a webhook channel")
        elif url is not None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                self.report.add((*path, "url"), f"{self._shown(entry.url)} is not an http(s) URL")
        if secret is not None and not _is_webhook_secret(secret):
            self.report.add(
                (*path, "secret"),
                f"{self._shown(entry.secret)} is not a Standard Webhooks secret"
                " ('whsec_' followed by base64)",
            )

    def _shown(self, raw: str | None) -> str:
        """The value as written: an ``env:`` reference, never what it resolved to."""
        return repr(raw) if raw and _ENV_REF.match(raw) else "the value"

    def _resolve(self, value: Any, path: Loc) -> Any:
        if isinstance(value, dict):
            return {k: self._resolve(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self._resolve(v, (*path, i)) for i, v in enumerate(value)]
        match = _ENV_REF.match(value) if isinstance(value, str) else None
        if match is None:
            return value
        name = match.group(1)
        if not _ENV_NAME.match(name):
            self.report.add(path, f"invalid environment variable name {name!r}")
            return None
        resolved = self.env.get(name)
        if not resolved:
            self.report.add(path, f"environment variable {name} is not set")
            return None
        return resolved

    def people(self) -> dict[str, Person]:
        people = {}
        for person_id, path, entry in self._entries("people", PersonModel):
            if person_id in _RESERVED_RECIPIENTS:
                self.report.add(path, f"{person_id!r} is reserved for notify 'to'; rename it")
            if entry.manager is not None and entry.manager not in self.person_ids:
                self.report.add(
                    (*path, "manager"), f"unknown person {entry.manager!r} (add it to 'people')"
                )
            people[person_id] = Person(
                id=person_id, email=entry.email, slack=entry.slack, manager=entry.manager
            )
        return people

    def teams(self) -> frozenset[str]:
        teams: dict[str, int] = {}
        for index, team in enumerate(self.top.teams or []):
            path: Loc = ("teams", index)
            if not isinstance(team, str) or not team:
                self.report.add(path, f"a team should be text, got {_show(team)}")
            elif team in teams:
                self.report.add(path, f"{team!r} is listed twice")
            else:
                teams[team] = index
        return frozenset(teams)

    def sources(self) -> dict[str, SourceSettings]:
        sources = {}
        for name, path, entry in self._entries("sources", SourceModel):
            if name not in KNOWN_SOURCES:
                self.report.add(
                    path, f"unknown source {name!r} (known: {', '.join(KNOWN_SOURCES)})"
                )
            sources[name] = SourceSettings(status_map=entry.status_map, options=entry.options)
        return sources

    # policies

    def policies(self) -> tuple[Policy, ...]:
        policies: list[Policy] = []
        first_line: dict[str, int] = {}
        for index, raw in enumerate(self.top.policies or []):
            path: Loc = ("policies", index)
            policy = self._policy(path, raw)
            raw_id = raw.get("id") if isinstance(raw, dict) else None
            if isinstance(raw_id, str):
                if raw_id in first_line:
                    self.report.add(
                        (*path, "id"),
                        f"duplicate id {raw_id!r} (first at line {first_line[raw_id]})",
                    )
                first_line.setdefault(raw_id, self.report.line_of((*path, "id")))
            if policy is not None:
                policies.append(policy)
        return tuple(policies)

    def _policy(self, path: Loc, raw: Any) -> Policy | None:
        kind = raw.get("kind", "response") if isinstance(raw, dict) else "response"
        model = POLICY_MODELS.get(kind) if isinstance(kind, str) else None
        if model is None:
            self.report.add(
                (*path, "kind"), f"unknown kind {kind!r} (use {', '.join(POLICY_MODELS)})"
            )
            return None
        entry = self.report.validate(model, raw, path)
        refs = entry if entry is not None else _quietly(PolicyRefsModel, raw)
        if refs is None:
            return None
        calendar = self._calendar_choice(path, refs)
        notify = self._notify(path, refs, kind)
        if entry is None:
            return None
        common: dict[str, Any] = {
            "id": entry.id,
            "match": {name: frozenset(values) for name, values in entry.match.items()},
            "calendar": calendar,
            "notify": notify,
            "line": self.report.line_of(path),
        }
        if isinstance(entry, ResponsePolicyModel):
            self._check_reminders(path, entry, _response_targets(entry))
            return Policy(
                kind="response",
                start=_trigger(entry.start),
                stop=_trigger(entry.stop),
                pause=_trigger(entry.pause),
                target_seconds=entry.target,
                targets=entry.targets,
                reminders=_reminders(entry),
                escalations=self._escalations(path, entry),
                **common,
            )
        if isinstance(entry, AttemptsPolicyModel):
            self._check_reminders(path, entry, {"the 'within' window": entry.within})
            return Policy(
                kind="attempts",
                start=_trigger(entry.start),
                stop=_trigger(entry.stop),
                pause=_trigger(entry.pause),
                count=_trigger(entry.count),
                required=entry.required,
                within_seconds=entry.within,
                guard=_trigger(entry.guard),
                reminders=_reminders(entry),
                escalations=self._escalations(path, entry),
                **common,
            )
        assert isinstance(entry, VolumePolicyModel)
        return Policy(
            kind="volume",
            count=_trigger(entry.count),
            per=entry.per,
            period=entry.period,
            volume_target=entry.target,
            volume_targets=entry.targets,
            at_risk_after=0.5 if entry.at_risk_after is None else entry.at_risk_after,
            **common,
        )

    def _calendar_choice(self, path: Loc, entry: PolicyRefsModel) -> CalendarChoice:
        choice = entry.calendar
        if choice is None:
            return CalendarChoice()
        if isinstance(choice, str):
            self._check_calendar(choice, (*path, "calendar"))
            return CalendarChoice(default=choice)
        for value, name in choice.map.items():
            self._check_calendar(name, (*path, "calendar", "map", value))
        if choice.default is not None:
            self._check_calendar(choice.default, (*path, "calendar", "default"))
        return CalendarChoice(default=choice.default, by_field=choice.by, by_value=choice.map)

    def _check_calendar(self, name: str, path: Loc) -> None:
        if name not in self.calendar_names:
            known = ", ".join(sorted(self.calendar_names)) or "none defined"
            self.report.add(path, f"unknown calendar {name!r} (known: {known})")

    def _notify(
        self, path: Loc, entry: PolicyRefsModel, kind: str
    ) -> dict[str, tuple[Recipient, ...]]:
        notify: dict[str, tuple[Recipient, ...]] = {}
        for notice in type(entry.notify).model_fields:
            recipients: tuple[Any, ...] = getattr(entry.notify, notice)
            if not recipients:
                continue
            notice_path: Loc = (*path, "notify", notice)
            if notice not in NOTIFY_KINDS[kind]:
                self.report.add(
                    notice_path,
                    f"not sent by {kind} policies (they send {', '.join(NOTIFY_KINDS[kind])})",
                )
                continue
            for index, recipient in enumerate(recipients):
                item: Loc = (*notice_path, index)
                if recipient.channel not in self.channel_names:
                    known = ", ".join(sorted(self.channel_names)) or "none defined"
                    self.report.add(
                        (*item, "channel"),
                        f"unknown channel {recipient.channel!r} (known: {known})",
                    )
                to = recipient.to
                if to is not None and to not in _RESERVED_RECIPIENTS and to not in self.person_ids:
                    self.report.add(
                        (*item, "to"),
                        f"unknown recipient {to!r} (use owner, manager or a person id in 'people')",
                    )
            notify[notice] = tuple(Recipient(channel=r.channel, to=r.to) for r in recipients)
        return notify

    def _check_reminders(
        self,
        path: Loc,
        entry: ResponsePolicyModel | AttemptsPolicyModel,
        limits: Mapping[str, int],
    ) -> None:
        """A ``before`` reminder as long as the time allowed would fire before the clock starts."""
        seen: dict[tuple[float | None, int | None], int] = {}
        for index, reminder in enumerate(entry.reminders):
            item: Loc = (*path, "reminders", index)
            key = (reminder.at, reminder.before)
            if key in seen:
                self.report.add(item, f"same as reminders[{seen[key]}]")
            seen.setdefault(key, index)
            if reminder.before is None:
                continue
            for label, seconds in limits.items():
                if reminder.before >= seconds:
                    self.report.add(
                        (*item, "before"),
                        f"{format_duration(reminder.before)} is not shorter than"
                        f" {label} ({format_duration(seconds)})",
                    )

    def _escalations(
        self, path: Loc, entry: ResponsePolicyModel | AttemptsPolicyModel
    ) -> tuple[Escalation, ...]:
        seen: dict[int, int] = {}
        for index, escalation in enumerate(entry.escalations):
            if escalation.after in seen:
                self.report.add(
                    (*path, "escalations", index), f"same as escalations[{seen[escalation.after]}]"
                )
            seen.setdefault(escalation.after, index)
        return tuple(Escalation(after_seconds=e.after) for e in entry.escalations)


def _quietly(model: type[M], data: Any) -> M | None:
    try:
        return model.model_validate(data)
    except ValidationError:
        return None


def _trigger(model: TriggerModel) -> Trigger:
    return Trigger(status=frozenset(model.status), activity=frozenset(model.activity))


def _reminders(entry: ResponsePolicyModel | AttemptsPolicyModel) -> tuple[Reminder, ...]:
    return tuple(Reminder(at_fraction=r.at, before_seconds=r.before) for r in entry.reminders)


def _response_targets(entry: ResponsePolicyModel) -> dict[str, int]:
    limits = {"the target": entry.target}
    for field, values in entry.targets.items():
        for value, seconds in values.items():
            limits[f"targets.{field}.{value}"] = seconds
    return limits


def _is_webhook_secret(secret: str) -> bool:
    encoded = secret.removeprefix("whsec_")
    if encoded == secret or not encoded:
        return False
    try:
        return bool(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError):
        return False


# --- summary -------------------------------------------------------------------------------


def _summary(policy: Policy) -> str:
    if policy.kind == "volume":
        counted = "/".join(sorted(policy.count.status))
        parts = [f"volume, {policy.volume_target} {counted} per {policy.per} per {policy.period}"]
        if policy.volume_targets:
            parts.append(_plural(len(policy.volume_targets), "override"))
    else:
        if policy.kind == "attempts":
            counted = "/".join(sorted(policy.count.activity | policy.count.status))
            head = f"attempts, {policy.required} of {counted} within"
            head += f" {format_duration(policy.within_seconds or 0)}"
        else:
            head = f"response, target {format_duration(policy.target_seconds or 0)}"
            overrides = [
                f"{field} {value} {format_duration(seconds)}"
                for field, values in policy.targets.items()
                for value, seconds in values.items()
            ]
            if overrides:
                head += f" ({', '.join(overrides)})"
        parts = [f"{head} on {_calendar_text(policy.calendar)}"]
        if policy.reminders:
            parts.append(_plural(len(policy.reminders), "reminder"))
        if policy.escalations:
            parts.append(_plural(len(policy.escalations), "escalation"))
    if policy.match:
        parts.append(
            "only " + "; ".join(f"{name} {'/'.join(sorted(v))}" for name, v in policy.match.items())
        )
    return f"{policy.id}: {', '.join(parts)}"


def _calendar_text(choice: CalendarChoice) -> str:
    default = choice.default or "24x7"
    if choice.by_field is None:
        return default
    mapped = ", ".join(f"{value}: {name}" for value, name in choice.by_value.items())
    return f"calendar by {choice.by_field} ({mapped}; otherwise {default})"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
