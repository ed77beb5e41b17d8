"""The policy file loader: the example set, the contract's example, and every error class with
the exact ``FILE:LINE: field: message`` an operator sees."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import date, time
from pathlib import Path

import pytest

from service import cli
from service.policy_file import (
    PolicyError,
    PolicyFileError,
    load_policy_file,
    load_policy_text,
    summarize,
)
from service.sla.policy import (
    CalendarChoice,
    Escalation,
    PolicySet,
    Recipient,
    Reminder,
    Trigger,
)

EXAMPLE = Path(__file__).parents[2] / "service" / "examples" / "policies.yaml"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NINE_TO_SIX = ((time(9), time(12)), (time(13), time(18)))


def load(*parts: str, env: dict[str, str] | None = None) -> PolicySet:
    """The parts of a file, each dedented on its own, loaded as ``p.yaml``."""
    text = "".join(textwrap.dedent(part) for part in parts)
    return load_policy_text(text, "p.yaml", env or {})


def errors_of(*parts: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(PolicyFileError) as info:
        load(*parts, env=env)
    return [str(error) for error in info.value.errors]


MINIMAL_POLICY = """\
policies:
  - id: p
    start: {status: [mql]}
    stop: {activity: [call]}
    target: 1h
"""


# --- the built-in example ------------------------------------------------------------------


def test_example_loads_without_environment() -> None:
    policy_set = load_policy_file(EXAMPLE, env={})

    assert [p.id for p in policy_set.policies] == [
        "first-touch",
        "disposition",
        "attempts",
        "mql-volume",
    ]
    assert policy_set.teams == frozenset({"emea", "latam", "na"})
    assert set(policy_set.people) == {"rep-1", "rep-2", "rep-3", "mgr-1"}
    assert policy_set.people["rep-2"].manager == "mgr-1"
    assert policy_set.channels["log"].type == "log"
    assert len(policy_set.version) == 12


def test_example_calendars() -> None:
    policy_set = load_policy_file(EXAMPLE, env={})

    sao_paulo = policy_set.calendars["sao-paulo"]
    assert sao_paulo.timezone == "America/Sao_Paulo"
    assert sao_paulo.hours is not None
    assert [sao_paulo.hours[day] for day in range(5)] == [NINE_TO_SIX] * 5
    assert sao_paulo.hours[5] == sao_paulo.hours[6] == ()
    assert (sao_paulo.holidays_country, sao_paulo.holidays_subdivision) == ("BR", "SP")
    assert date(2026, 12, 24) in sao_paulo.closed

    always = policy_set.calendars["24x7"]
    assert always.hours is None
    assert always.timezone == "America/Sao_Paulo"


def test_example_first_touch() -> None:
    policy = load_policy_file(EXAMPLE, env={}).policies[0]

    assert policy.kind == "response"
    assert policy.start == Trigger(status=frozenset({"mql"}))
    assert policy.stop.activity == frozenset({"call", "email", "whatsapp", "meeting"})
    assert policy.stop.status == frozenset({"sal", "disqualified", "recycled"})
    assert policy.pause == Trigger(status=frozenset({"waiting_on_lead"}))
    assert policy.target_seconds == 3600
    assert policy.targets == {"priority": {"high": 900}}
    assert policy.calendar == CalendarChoice(default="sao-paulo")
    assert policy.reminders == (Reminder(at_fraction=0.5), Reminder(before_seconds=600))
    assert policy.escalations == (Escalation(0), Escalation(7200))
    assert policy.notify["escalation"] == (Recipient(channel="log", to="manager"),)
    assert policy.line is not None
    assert EXAMPLE.read_text().splitlines()[policy.line - 1].strip() == "- id: first-touch"


def test_example_attempts_disposition_and_volume() -> None:
    policy_set = load_policy_file(EXAMPLE, env={})

    disposition = policy_set.policy("disposition")
    assert disposition is not None
    assert disposition.target_seconds == 24 * 3600
    assert disposition.calendar.default == "24x7"

    attempts = policy_set.policy("attempts")
    assert attempts is not None
    assert attempts.kind == "attempts"
    assert attempts.required == 5
    assert attempts.within_seconds == 7 * 86400
    assert attempts.count.activity == frozenset({"call", "email", "whatsapp"})
    assert attempts.guard.status == frozenset({"unreachable", "disqualified"})
    assert attempts.stop.status == frozenset({"sql", "opportunity", "customer"})

    volume = policy_set.policy("mql-volume")
    assert volume is not None
    assert (volume.kind, volume.per, volume.period, volume.volume_target) == (
        "volume",
        "owner",
        "month",
        100,
    )
    assert volume.count == Trigger(status=frozenset({"mql"}))
    assert volume.at_risk_after == 0.5


def test_example_summary() -> None:
    assert summarize(load_policy_file(EXAMPLE, env={})) == [
        "first-touch: response, target 1h (priority high 15m) on sao-paulo, 2 reminders,"
        " 2 escalations",
        "disposition: response, target 24h on 24x7",
        "attempts: attempts, 5 of call/email/whatsapp within 7d on 24x7",
        "mql-volume: volume, 100 mql per owner per month",
    ]


# --- the contract's example ----------------------------------------------------------------

CONTRACT_EXAMPLE = """\
calendars:
  sao-paulo:
    timezone: America/Sao_Paulo
    hours: {mon-fri: ["09:00-12:00", "13:00-18:00"], sat: ["09:00-12:00"]}
    holidays: {country: BR, subdivision: SP}   # from the `holidays` package
    closed: ["2026-12-24"]
channels:
  ops:   {type: webhook, url: "https://ops.example.com/sla", secret: "env:OPS_WEBHOOK_SECRET"}
  sales: {type: webhook, url: "env:SALES_WEBHOOK_URL"}
  mail:  {type: log}
people:
  rep-7: {email: ana@example.com, slack: U024BE7LH, manager: mgr-1}
  mgr-1: {email: boss@example.com}
policies:
  - id: first-touch
    kind: response                 # the default kind: one clock, start -> stop
    match: {team: [emea]}          # optional filter on lead fields when the clock starts
    start: {status: [mql]}         # entering any of these starts a cycle
    stop:  {activity: [call, email, whatsapp], status: [sal, disqualified, recycled]}
    pause: {status: [waiting_on_lead]}
    target: 1h                     # 90s, 15m, 1h30m, 2d
    targets: {priority: {high: 15m, low: 4h}}
    calendar: sao-paulo            # omitted: 24x7
    reminders: [{at: 50%}, {before: 10m}]
    escalations: [{after: 0m}, {after: 2h}]   # 0m = at breach
    notify:
      reminder:   [{channel: mail, to: owner}]
      breach:     [{channel: sales, to: owner}, {channel: ops}]
      escalation: [{channel: mail, to: manager}]
  - id: attempts
    kind: attempts                 # at least N counted activities within a window
    start: {status: [sal]}
    stop:  {status: [sql, opportunity, customer]}
    count: {activity: [call, email, whatsapp]}
    required: 5
    within: 7d
    guard: {status: [unreachable, disqualified]}   # disposing earlier than that is a breach
  - id: mql-volume
    kind: volume                   # marketing's side: an aggregate over a period
    count: {status: [mql]}
    per: owner                     # or team
    period: month
    target: 100
"""
CONTRACT_ENV = {
    "OPS_WEBHOOK_SECRET": SECRET,
    "SALES_WEBHOOK_URL": "https://hooks.example.com/sales",
}


def test_contract_example_loads() -> None:
    policy_set = load_policy_text(CONTRACT_EXAMPLE, "contract.yaml", CONTRACT_ENV)

    ops, sales = policy_set.channels["ops"], policy_set.channels["sales"]
    assert (ops.type, ops.url, ops.secret) == ("webhook", "https://ops.example.com/sla", SECRET)
    assert sales.url == "https://hooks.example.com/sales"
    assert sales.secret is None
    hours = policy_set.calendars["sao-paulo"].hours
    assert hours is not None and hours[5] == ((time(9), time(12)),)
    first = policy_set.policies[0]
    assert first.match == {"team": frozenset({"emea"})}
    assert first.targets == {"priority": {"high": 900, "low": 4 * 3600}}
    assert first.notify["breach"] == (
        Recipient(channel="sales", to="owner"),
        Recipient(channel="ops"),
    )
    assert policy_set.people["rep-7"].slack == "U024BE7LH"
    assert summarize(policy_set)[0] == (
        "first-touch: response, target 1h (priority high 15m, priority low 4h) on sao-paulo,"
        " 2 reminders, 2 escalations, only team emea"
    )


def test_contract_example_as_written_names_the_undelivered_channels() -> None:
    text = CONTRACT_EXAMPLE.replace(
        '{type: webhook, url: "env:SALES', '{type: slack, url: "env:SALES'
    )
    text = text.replace("mail:  {type: log}", "mail:  {type: email}")
    with pytest.raises(PolicyFileError) as info:
        load_policy_text(text, "contract.yaml", CONTRACT_ENV)
    assert [str(e) for e in info.value.errors] == [
        "contract.yaml:9: channels.sales.type: 'slack' is not supported yet"
        " (supported: webhook, log)",
        "contract.yaml:10: channels.mail.type: 'email' is not supported yet"
        " (supported: webhook, log)",
    ]


def test_version_is_a_digest_of_the_text() -> None:
    first = load_policy_text(MINIMAL_POLICY, "p.yaml", {})
    again = load_policy_text(MINIMAL_POLICY, "other-name.yaml", {})
    changed = load_policy_text(MINIMAL_POLICY + "# a comment\n", "p.yaml", {})

    assert first.version == again.version
    assert len(first.version) == 12
    assert int(first.version, 16) >= 0
    assert changed.version != first.version


# --- errors --------------------------------------------------------------------------------

MANY_ERRORS = """\
calendars:
  sp:
    timezone: America/Sao_Pablo
    hours:
      mon-fri: ["09:00-12:00", "11:00-18:00"]
    holidays: {country: XX}
channels:
  log: {type: log}
  sales: {type: slack}
  ops: {type: webhook, url: "https://ops.example.com/sla", secret: "env:OPS_SECRET"}
policies:
  - id: first-touch
    start: {status: [mql]}
    stop: {activity: [call]}
    target: 1x
    calendar: lisbon
    notify:
      breach: [{channel: pager}]
    remindrs: [{at: 50%}]
"""


def test_every_error_of_a_file_with_its_line() -> None:
    assert errors_of(MANY_ERRORS) == [
        "p.yaml:3: calendars.sp.timezone: unknown time zone 'America/Sao_Pablo'"
        " (use an IANA name such as America/Sao_Paulo)",
        "p.yaml:5: calendars.sp.hours.mon-fri: 09:00-12:00 overlaps 11:00-18:00",
        "p.yaml:6: calendars.sp.holidays.country: unknown country 'XX' for the holidays package"
        " (use an ISO 3166 code such as BR, US, RO)",
        "p.yaml:9: channels.sales.type: 'slack' is not supported yet (supported: webhook, log)",
        "p.yaml:10: channels.ops.secret: environment variable OPS_SECRET is not set",
        "p.yaml:15: policies[0].target: invalid duration '1x' (use 90s, 15m, 1h30m, 2d)",
        "p.yaml:16: policies[0].calendar: unknown calendar 'lisbon' (known: sp)",
        "p.yaml:18: policies[0].notify.breach[0].channel: unknown channel 'pager'"
        " (known: log, ops, sales)",
        "p.yaml:19: policies[0].remindrs: unknown key (did you mean 'reminders'?)",
    ]


def test_error_objects_and_exception_text() -> None:
    with pytest.raises(PolicyFileError) as info:
        load("policies:\n  - id: p\n    target: 1x\n")
    first = info.value.errors[0]
    assert isinstance(first, PolicyError)
    assert (first.file, first.line) == ("p.yaml", 2)
    assert str(info.value) == "\n".join(str(e) for e in info.value.errors)


def test_yaml_syntax_error_has_its_line() -> None:
    errors = errors_of(
        """\
        policies:
          - id: p
            start: {status: [mql]
            target: 1h
        """
    )
    assert len(errors) == 1
    assert errors[0].startswith("p.yaml:4: YAML syntax error: ")


def test_bad_indentation_is_a_syntax_error_on_its_line() -> None:
    errors = errors_of("policies:\n  - id: p\n   target: 1h\n")
    assert len(errors) == 1
    assert errors[0].startswith("p.yaml:3: YAML syntax error")


def test_empty_file_and_wrong_top_level() -> None:
    assert errors_of("# nothing\n") == [
        "p.yaml:1: the file is empty (expected a mapping with 'policies')"
    ]
    assert errors_of("- a\n- b\n") == ["p.yaml:1: should be a mapping, got a list"]
    assert errors_of("calendars: {}\n") == ["p.yaml:1: policies: required (a list of policies)"]


def test_unknown_top_level_key_does_not_hide_the_rest() -> None:
    errors = errors_of(
        """\
        peple:
          rep-1: {}
        policies:
          - id: p
            start: {status: [mql]}
            stop: {activity: [call]}
            target: 1y
        """
    )
    assert errors == [
        "p.yaml:1: peple: unknown key (did you mean 'people'?)",
        "p.yaml:7: policies[0].target: invalid duration '1y' (use 90s, 15m, 1h30m, 2d)",
    ]


def test_duplicate_keys_are_errors() -> None:
    errors = errors_of(
        """\
        policies:
          - id: p
            start: {status: [mql]}
            stop: {activity: [call]}
            target: 1h
            target: 2h
        """
    )
    assert errors == ["p.yaml:6: policies[0].target: duplicate key (first at line 5)"]


def test_missing_environment_variable_in_url_names_it() -> None:
    text = 'channels:\n  ops: {type: webhook, url: "env:OPS_URL"}\n' + MINIMAL_POLICY
    assert errors_of(text) == [
        "p.yaml:2: channels.ops.url: environment variable OPS_URL is not set"
    ]
    loaded = load_policy_text(text, "p.yaml", {"OPS_URL": "https://ops.example.com/x"})
    assert loaded.channels["ops"].url == "https://ops.example.com/x"


def test_webhook_channel_rules_never_show_secrets() -> None:
    text = (
        "channels:\n"
        '  a: {type: webhook, secret: "env:A_SECRET"}\n'
        '  b: {type: webhook, url: "ftp://x", secret: "not-a-secret"}\n'
        "  c: {type: log, url: https://x.example.com}\n"
        "  d: {type: pager}\n" + MINIMAL_POLICY
    )
    errors = errors_of(text, env={"A_SECRET": "hunter2"})
    assert errors == [
        "p.yaml:2: channels.a.url: required for a webhook channel",
        "p.yaml:2: channels.a.secret: 'env:A_SECRET' is not a Standard Webhooks secret"
        " ('whsec_' followed by base64)",
        "p.yaml:3: channels.b.url: the value is not an http(s) URL",
        "p.yaml:3: channels.b.secret: the value is not a Standard Webhooks secret"
        " ('whsec_' followed by base64)",
        "p.yaml:4: channels.c.url: not used by a log channel",
        "p.yaml:5: channels.d.type: unknown channel type 'pager' (supported: webhook, log)",
    ]
    assert not any("hunter2" in error for error in errors)


def test_people_references() -> None:
    text = (
        "people:\n"
        "  rep-1: {manager: mgr-9}\n"
        "  owner: {}\n"
        "channels:\n"
        "  log: {type: log}\n"
        "policies:\n"
        "  - id: p\n"
        "    start: {status: [mql]}\n"
        "    stop: {activity: [call]}\n"
        "    target: 1h\n"
        "    notify:\n"
        "      breach: [{channel: log, to: rep-2}, {channel: log, to: owner}]\n"
    )
    assert errors_of(text) == [
        "p.yaml:2: people.rep-1.manager: unknown person 'mgr-9' (add it to 'people')",
        "p.yaml:3: people.owner: 'owner' is reserved for notify 'to'; rename it",
        "p.yaml:12: policies[0].notify.breach[0].to: unknown recipient 'rep-2'"
        " (use owner, manager or a person id in 'people')",
    ]


def test_calendar_errors() -> None:
    errors = errors_of(
        """\
        calendars:
          a:
            hours: {mon-fri: ["09:00-12:00"], fri: "11:00-13:00", sun-mon: ["9-12"]}
            holidays: {country: BR, subdivision: ZZ}
            closed: ["2026-02-30"]
            open: ["2026-12-26"]
          b:
            timezone: Europe/Bucharest
            hours: {sat: ["12:00-24:00", "24:00-24:00"]}
            holidays: {country: br}
        """,
        MINIMAL_POLICY,
    )
    assert errors == [
        "p.yaml:2: calendars.a.timezone: required",
        "p.yaml:3: calendars.a.hours.sun-mon: day range 'sun-mon' runs backwards"
        " (split it, e.g. sat-sun and mon)",
        "p.yaml:3: calendars.a.hours.sun-mon[0]: invalid interval '9-12'"
        ' (use e.g. "09:00-12:00")',
        "p.yaml:4: calendars.a.holidays.subdivision: unknown subdivision 'ZZ' of BR"
        " (known: AC, AL, AM, AP, BA, CE, DF, ES, GO, MA, MG, MS, MT, PA, PB, …)",
        "p.yaml:5: calendars.a.closed[0]: invalid date '2026-02-30' (use YYYY-MM-DD)",
        "p.yaml:9: calendars.b.hours.sat[1]: '24:00-24:00': 24:00 can only end an interval",
        "p.yaml:10: calendars.b.holidays.country: unknown country 'br' (did you mean 'BR'?)",
    ]


def test_overlap_across_day_entries() -> None:
    errors = errors_of(
        """\
        calendars:
          a:
            timezone: UTC
            hours: {mon-fri: ["09:00-12:00"], fri: "11:00-13:00"}
        """,
        MINIMAL_POLICY,
    )
    assert errors == ["p.yaml:4: calendars.a.hours: fri: 09:00-12:00 overlaps 11:00-13:00"]


def test_calendar_shapes() -> None:
    policy_set = load(
        """\
        calendars:
          late:
            timezone: Europe/Bucharest
            hours: {mon-thu: ["18:00-24:00"], "sat,sun": "10:00-14:00"}
            open: ["2026-12-26"]
            closed: "2026-12-25"
          extra:
            timezone: UTC
            hours: {mon: ["09:00-17:00"]}
            open: {"2026-12-26": ["09:00-13:00"]}
          always:
            timezone: Asia/Tokyo
            holidays: {country: NO}
            open: ["2027-01-01"]
        """,
        MINIMAL_POLICY,
    )
    calendars = policy_set.calendars
    late = calendars["late"]
    assert late.hours is not None
    assert late.hours[0] == ((time(18), time(0)),)  # 24:00 ends the day
    assert late.hours[4] == ()
    assert late.hours[5] == late.hours[6] == ((time(10), time(14)),)
    assert late.open == {date(2026, 12, 26): ((time(18), time(0)),)}  # Monday's hours
    assert late.closed == frozenset({date(2026, 12, 25)})
    assert calendars["extra"].open == {date(2026, 12, 26): ((time(9), time(13)),)}
    always = calendars["always"]
    assert always.hours is None
    assert always.holidays_country == "NO"  # Norway, not false
    assert always.open == {date(2027, 1, 1): ((time(0), time(0)),)}


def test_open_date_rules() -> None:
    errors = errors_of(
        """\
        calendars:
          a:
            timezone: UTC
            hours: {tue: ["09:00-17:00"]}
            open: ["2026-12-26"]
          b:
            timezone: UTC
            closed: ["2026-12-24"]
            open: {"2026-12-24": ["09:00-12:00"]}
          c:
            timezone: UTC
            hours: {}
        """,
        MINIMAL_POLICY,
    )
    assert errors == [
        "p.yaml:5: calendars.a.open: a date without hours opens with Monday's, and Monday has"
        ' none: give them, e.g. {"2026-12-26": ["09:00-13:00"]}',
        "p.yaml:9: calendars.b.open: 2026-12-24 is also listed in 'closed'",
        "p.yaml:12: calendars.c.hours: no open time in the week",
    ]


def test_policy_rules() -> None:
    errors = errors_of(
        """\
        calendars:
          sp: {timezone: America/Sao_Paulo}
        policies:
          - id: First
            start: {}
            target: 0m
            count: {activity: [call]}
          - id: a
            kind: attempts
            start: {status: [sal]}
            count: {activity: [call]}
            required: 0
            within: 7d
            reminders: [{before: 7d}, {at: 100%}, {at: 20%, before: 1h}]
            notify: {volume_missed: [{channel: log}]}
          - id: v
            kind: volume
            count: {activity: [call]}
            per: rep
            period: year
            target: 100
            reminders: [{at: 50%}]
          - id: a
            kind: sla
          - id: r
            start: {status: [mql]}
            stop: {status: [sal]}
            target: 1h
            targets: {priority: {high: 15m}, tema: {x: 1h}}
            reminders: [{before: 15m}, {before: 10m}, {before: 10m}]
            escalations: [{after: 1h}, {after: 60m}]
            calendar: {by: country, map: {BR: sp, RO: bucharest}, default: lisbon}
            match: {tema: x}
        """
    )
    assert errors == [
        "p.yaml:4: policies[0].id: invalid id 'First' (use lowercase letters, digits, '-' and"
        " '_', starting with a letter or digit)",
        "p.yaml:4: policies[0].stop: required",
        "p.yaml:5: policies[0].start: must name at least one status or activity",
        "p.yaml:6: policies[0].target: '0m' must be longer than zero",
        "p.yaml:7: policies[0].count: does not apply to response policies"
        " (only to attempts and volume)",
        "p.yaml:12: policies[1].required: should be greater than or equal to 1, got 0",
        "p.yaml:14: policies[1].reminders[1].at: '100%' must be between 0% and 100%, both excluded",
        "p.yaml:14: policies[1].reminders[2]: give exactly one of 'at' (e.g. 50%) or"
        " 'before' (e.g. 10m)",
        "p.yaml:15: policies[1].notify.volume_missed: not sent by attempts policies"
        " (they send reminder, breach, escalation, corrected)",
        "p.yaml:18: policies[2].count: a volume policy counts leads entering a status,"
        " not activities",
        "p.yaml:19: policies[2].per: should be 'owner' or 'team', got 'rep'",
        "p.yaml:20: policies[2].period: should be 'week', 'month' or 'quarter', got 'year'",
        "p.yaml:22: policies[2].reminders: does not apply to volume policies"
        " (only to response and attempts)",
        "p.yaml:23: policies[3].id: duplicate id 'a' (first at line 8)",
        "p.yaml:24: policies[3].kind: unknown kind 'sla' (use response, attempts, volume)",
        "p.yaml:29: policies[4].targets.tema: unknown lead field 'tema' (use status, owner,"
        " team, email, name, source, segment, priority, country or attributes.<name>)",
        "p.yaml:32: policies[4].calendar.map.RO: unknown calendar 'bucharest' (known: sp)",
        "p.yaml:32: policies[4].calendar.default: unknown calendar 'lisbon' (known: sp)",
        "p.yaml:33: policies[4].match.tema: unknown lead field 'tema' (use status, owner,"
        " team, email, name, source, segment, priority, country or attributes.<name>)",
    ]


def test_before_reminder_must_be_shorter_than_every_target() -> None:
    errors = errors_of(
        """\
        policies:
          - id: r
            start: {status: [mql]}
            stop: {status: [sal]}
            target: 1h
            targets: {priority: {high: 15m}}
            reminders: [{before: 15m}, {before: 10m}, {before: 10m}]
            escalations: [{after: 1h}, {after: 60m}]
          - id: a
            kind: attempts
            start: {status: [sal]}
            count: {activity: [call]}
            required: 5
            within: 7d
            reminders: [{before: 1w}]
        """
    )
    assert errors == [
        "p.yaml:7: policies[0].reminders[0].before: 15m is not shorter than"
        " targets.priority.high (15m)",
        "p.yaml:7: policies[0].reminders[2]: same as reminders[1]",
        "p.yaml:8: policies[0].escalations[1]: same as escalations[0]",
        "p.yaml:15: policies[1].reminders[0].before: 7d is not shorter than"
        " the 'within' window (7d)",
    ]


def test_calendar_by_country_and_custom_attributes() -> None:
    policy_set = load_policy_text(
        textwrap.dedent(
            """\
            calendars:
              sao-paulo: {timezone: America/Sao_Paulo}
              bucharest: {timezone: Europe/Bucharest, holidays: {country: RO}}
            teams: [emea, latam]
            sources:
              hubspot: {status_map: {customstage: mql}, options: {pipeline: default}}
            policies:
              - id: p
                match: {team: emea, attributes.region: [south, north]}
                start: {status: mql}
                stop: {activity: call}
                target: 1h30m
                calendar: {by: country, map: {BR: sao-paulo, RO: bucharest}, default: sao-paulo}
              - id: v
                kind: volume
                count: {status: [mql]}
                per: owner
                period: quarter
                target: 300
                targets: {rep-7: 50, 12345: 10}
                at_risk_after: 25%
            """
        ),
        "p.yaml",
        {},
    )
    first, volume = policy_set.policies
    assert first.match == {
        "team": frozenset({"emea"}),
        "region": frozenset({"south", "north"}),
    }
    assert first.target_seconds == 5400
    assert first.calendar == CalendarChoice(
        default="sao-paulo", by_field="country", by_value={"BR": "sao-paulo", "RO": "bucharest"}
    )
    assert volume.volume_targets == {"rep-7": 50, "12345": 10}
    assert volume.at_risk_after == 0.25
    assert policy_set.sources["hubspot"].status_map == {"customstage": "mql"}
    assert policy_set.sources["hubspot"].options == {"pipeline": "default"}
    assert summarize(policy_set) == [
        "p: response, target 1h30m on calendar by country (BR: sao-paulo, RO: bucharest;"
        " otherwise sao-paulo), only team emea; region north/south",
        "v: volume, 300 mql per owner per quarter, 2 overrides",
    ]


def test_unknown_source_and_nested_unknown_key() -> None:
    errors = errors_of(
        """\
        sources:
          hubsopt: {status_map: {a: mql}}
          pipedrive: {statusmap: {a: mql}}
        teams: [emea, emea]
        """,
        MINIMAL_POLICY,
    )
    assert errors == [
        "p.yaml:2: sources.hubsopt: unknown source 'hubsopt' (known: generic, hubspot,"
        " pipedrive, salesforce, rdstation, zoho, close)",
        "p.yaml:3: sources.pipedrive.statusmap: unknown key (did you mean 'status_map'?)",
        "p.yaml:4: teams[1]: 'emea' is listed twice",
    ]


def test_anchors_and_merge_keys() -> None:
    policy_set = load(
        """\
        policies:
          - &base
            id: a
            start: {status: [mql]}
            stop: {activity: [call]}
            target: 1h
          - <<: *base
            id: b
            target: 2h
        """
    )
    a, b = policy_set.policies
    assert (a.id, a.target_seconds) == ("a", 3600)
    assert (b.id, b.target_seconds, b.start) == ("b", 7200, a.start)


def test_alias_bombs_are_refused() -> None:
    text = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for level in range(1, 7):
        text += (
            f"{chr(97 + level)}: &{chr(97 + level)} ["
            + ", ".join([f"*{chr(96 + level)}"] * 10)
            + "]\n"
        )
    errors = errors_of(text)
    assert len(errors) == 1
    assert "too many values" in errors[0]


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PolicyFileError) as info:
        load_policy_file(missing)
    assert str(info.value).startswith(f"{missing}:0: cannot read the file: ")


def test_load_policy_file_reads_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "p.yaml"
    path.write_text('channels:\n  ops: {type: webhook, url: "env:OPS_URL"}\n' + MINIMAL_POLICY)
    monkeypatch.setenv("OPS_URL", "https://ops.example.com/hook")
    assert load_policy_file(path).channels["ops"].url == "https://ops.example.com/hook"


def test_self_referring_aliases_are_refused() -> None:
    assert errors_of("a: &a [1, *a]\n", MINIMAL_POLICY) == [
        "p.yaml:1: a[1]: an alias refers to a value that contains it",
        "p.yaml:1: a: unknown key (expected calendars, channels, people, teams, sources, policies)",
    ]
    errors = errors_of("a: &a {<<: *a}\n", MINIMAL_POLICY)
    assert errors[0] == "p.yaml:1: a: an alias refers to a value that contains it"


def test_yaml_1_2_scalars() -> None:
    """``no`` stays text, ``010`` is ten, ``09:00`` and dates stay text for the schema."""
    policy_set = load(
        """\
        calendars:
          oslo: {timezone: Europe/Oslo, hours: {mon: [09:00-17:00]}, closed: [2026-05-18],
                 holidays: {country: NO}}
        """,
        """\
        policies:
          - id: v
            kind: volume
            count: {status: [mql]}
            per: owner
            period: month
            target: 010
        """,
    )
    oslo = policy_set.calendars["oslo"]
    assert oslo.holidays_country == "NO"
    assert oslo.hours is not None and oslo.hours[0] == ((time(9), time(17)),)
    assert oslo.closed == frozenset({date(2026, 5, 18)})
    assert policy_set.policies[0].volume_target == 10


def test_policies_check_prints_file_line_message_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "policies.yaml"
    broken.write_text("policies:\n  - id: first-touch\n    kind: response\n")
    assert cli.main(["policies", "check", str(broken)]) == 1
    errors = capsys.readouterr().err.splitlines()
    assert f"{broken}:2: policies[0].target: required" in errors
    assert all(line.startswith(f"{broken}:") for line in errors)

    assert cli.main(["policies", "check", str(EXAMPLE)]) == 0
    summary = capsys.readouterr().out.splitlines()
    assert summary[0].startswith("first-touch: response, target 1h")


def test_policies_check_into_a_closed_pipe_stops_quietly() -> None:
    """``lead-sla policies check FILE | head -1``: the reader leaves before the summary is
    written; the command stops without a traceback."""
    check = subprocess.Popen(
        [sys.executable, "-m", "service", "policies", "check", str(EXAMPLE)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert check.stdout is not None and check.stderr is not None
    check.stdout.close()  # before the interpreter has even started: every write fails
    errors = check.stderr.read().decode()
    assert check.wait(timeout=60) == 1
    assert errors == ""
