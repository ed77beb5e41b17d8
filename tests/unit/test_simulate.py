"""``lead-sla simulate``'s stories: placed in business time, so a fresh server shows breaches,
met cycles and reminders whatever the hour it is run at."""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from service.config import Settings
from service.crm.base import InboundRequest, SourceConfig
from service.crm.generic import GenericAdapter
from service.policies import EXAMPLE_POLICY_FILE, load
from service.simulate import business_time_before, lead_story, run_simulation, story_calendar
from service.sla.calendar import build_calendar
from service.sla.engine import derive_cycles
from service.sla.policy import CalendarSpec
from service.sla.types import LeadEvent, sort_and_dedupe
from tests.conftest import GENERIC_SECRET
from tests.workers import free_port

EXAMPLES = load(EXAMPLE_POLICY_FILE, {})
SAO_PAULO = EXAMPLES.calendars("sao-paulo")

# In UTC; São Paulo is UTC-3 all year.
SATURDAY_NIGHT = datetime(2026, 11, 28, 2, 30, tzinfo=UTC)
MONDAY_BEFORE_OPENING = datetime(2026, 11, 30, 11, 0, tzinfo=UTC)
CHRISTMAS_AFTERNOON = datetime(2026, 12, 25, 18, 0, tzinfo=UTC)  # a holiday in Brazil
WEDNESDAY_MORNING = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)
HOURS = [SATURDAY_NIGHT, MONDAY_BEFORE_OPENING, CHRISTMAS_AFTERNOON, WEDNESDAY_MORNING]


@pytest.mark.parametrize("end", HOURS)
@pytest.mark.parametrize("hours", [0.2, 1.0, 7.5, 30.0])
def test_business_time_before_runs_back_that_much_open_time(end: datetime, hours: float) -> None:
    start = business_time_before(SAO_PAULO, end, hours * 3600)
    assert hours * 3600 <= SAO_PAULO.elapsed(start, end) <= hours * 3600 + 1
    assert end - start >= timedelta(hours=hours)


def test_business_time_before_on_a_calendar_never_open_falls_back_to_wall_time() -> None:
    never_open = build_calendar(CalendarSpec(name="never", hours={}))
    end = WEDNESDAY_MORNING
    assert business_time_before(never_open, end, 3600) == end - timedelta(hours=1)


def _parse(events: list[dict[str, Any]], now: datetime) -> list[LeadEvent]:
    request = InboundRequest(
        method="POST",
        path="/webhooks/generic",
        query_string="",
        headers={},
        body=json.dumps({"events": events}).encode(),
        public_url="http://127.0.0.1:8000",
        received_at=now,
    )
    config = SourceConfig(secret="unused", status_map={}, options={}, tolerance_seconds=300)
    return list(GenericAdapter().parse(request, config).events)


@pytest.mark.parametrize("now", HOURS)
def test_stories_show_breaches_met_cycles_and_reminders_whatever_the_hour(now: datetime) -> None:
    rng = random.Random(7)
    stories = [e for i in range(40) for e in lead_story(rng, f"SIM-{i}", now, 3.0, SAO_PAULO)]
    by_lead: dict[str, list[LeadEvent]] = defaultdict(list)
    for event in _parse(stories, now):
        assert event.occurred_at < now
        by_lead[event.lead.id].append(event)
    first_touch = next(p for p in EXAMPLES.policy_set.policies if p.id == "first-touch")
    outcomes: Counter[str] = Counter()
    for events in by_lead.values():
        for cycle in derive_cycles(first_touch, sort_and_dedupe(events), now, EXAMPLES.calendars):
            outcomes[cycle.state] += 1
            reminded = any(t.kind == "reminder" and t.at <= now for t in cycle.timers)
            if cycle.state == "running" and reminded:
                outcomes["at risk"] += 1
    assert sum(outcomes[state] for state in ("running", "met", "breached")) == 40
    assert outcomes["breached"] >= 5, outcomes
    assert outcomes["met"] >= 5, outcomes
    assert outcomes["at risk"] >= 1, outcomes


def test_the_calendar_is_the_first_response_policys_of_the_servers_file() -> None:
    calendar, name = story_calendar(Settings(policy_file=None))
    assert name == "sao-paulo"
    assert calendar.timezone.key == "America/Sao_Paulo"
    assert not calendar.is_open(SATURDAY_NIGHT)


def test_an_unreadable_policy_file_falls_back_to_24x7(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "policies.yaml"
    broken.write_text("policies: [\n")
    calendar, name = story_calendar(Settings(policy_file=str(broken)))
    assert name == "24x7"
    end = SATURDAY_NIGHT
    assert calendar.elapsed(end - timedelta(hours=2), end) == 7200
    assert str(broken) in capsys.readouterr().err


def test_a_server_that_cannot_be_reached_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = Settings(env_overrides={"LEAD_SLA_WEBHOOK_SECRET_GENERIC": GENERIC_SECRET})
    assert run_simulation(settings, url, leads=3, seed=1, hours_back=3.0) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"lead-sla simulate: {url}/webhooks/generic: ")
