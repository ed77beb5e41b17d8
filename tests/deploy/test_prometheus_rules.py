"""The Prometheus rules, their promtool unit tests, and the Prometheus/Alertmanager configs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.promql import promql_sources
from tests.deploy.tools import DEPLOY, DOCS, run, tool

PROMETHEUS = DEPLOY / "prometheus"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yaml"))
TEST_FILES = sorted((PROMETHEUS / "tests").glob("*.yaml"))
RUNBOOK = DOCS / "runbook.md"
SEVERITIES = {"page", "ticket", "warning"}


def _rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


ALERTS = {rule["alert"]: rule for rule in _rules() if "alert" in rule}


def _alert_tests() -> list[dict[str, Any]]:
    return [
        case
        for path in TEST_FILES
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]


def github_anchor(heading: str) -> str:
    """The anchor GitHub (and most Markdown renderers) give a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_rule_files_exist() -> None:
    assert [p.name for p in RULE_FILES] == ["lead-sla.rules.yaml"]
    assert TEST_FILES, "deploy/prometheus/tests/ has no promtool test file"


def test_promtool_check_rules() -> None:
    run(tool("promtool"), "check", "rules", *RULE_FILES)


def test_promtool_test_rules() -> None:
    result = run(tool("promtool"), "test", "rules", *TEST_FILES)
    assert result.stdout.count("SUCCESS") == len(TEST_FILES), result.stdout


def test_prometheus_config_is_valid_and_loads_the_rules() -> None:
    result = run(tool("promtool"), "check", "config", PROMETHEUS / "prometheus.yml")
    assert f"{len(_rules())} rules found" in result.stdout, result.stdout


def test_alertmanager_config_is_valid() -> None:
    run(tool("amtool"), "check-config", PROMETHEUS / "alertmanager.yml")


def test_alertmanager_routes_every_severity() -> None:
    config = yaml.safe_load((PROMETHEUS / "alertmanager.yml").read_text())
    routed = {
        match.split("=", 1)[1].strip('"')
        for route in config["route"].get("routes", [])
        for match in route.get("matchers", [])
        if match.startswith("severity=")
    }
    # page and ticket have their own receivers; everything else goes to the default one.
    assert routed == {"page", "ticket"}
    severities = {rule["labels"]["severity"] for rule in ALERTS.values()}
    assert severities <= SEVERITIES


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    cases = _alert_tests()
    for name in ALERTS:
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case.get("exp_alerts") for case in mine), f"no test makes {name} fire"
        assert any(not case.get("exp_alerts") for case in mine), f"no test keeps {name} silent"
    tested = {case["alertname"] for case in cases}
    assert tested <= set(ALERTS), f"tests name unknown alerts: {tested - set(ALERTS)}"


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_alert_is_documented_and_points_to_its_runbook_section(name: str) -> None:
    rule = ALERTS[name]
    annotations = rule.get("annotations", {})
    assert annotations.get("summary"), f"{name}: no summary"
    assert annotations.get("description"), f"{name}: no description"
    assert rule.get("labels", {}).get("severity") in SEVERITIES, f"{name}: severity"
    url = annotations.get("runbook_url", "")
    path, _, anchor = url.partition("#")
    assert path == "docs/operations/runbook.md", f"{name}: runbook_url {url!r}"
    headings = [
        line.lstrip("#").strip()
        for line in RUNBOOK.read_text().splitlines()
        if re.match(r"^#{2,3} ", line)
    ]
    assert anchor in {github_anchor(h) for h in headings}, f"{name}: no section #{anchor}"


def test_recording_rules_follow_the_naming_convention() -> None:
    # level:metric:operations (https://prometheus.io/docs/practices/rules/)
    for rule in _rules():
        if "record" in rule:
            assert re.fullmatch(r"[a-z_]+:lead_sla_[a-z_]+:[a-z0-9_]+", rule["record"]), rule


def test_every_dashboard_and_rule_expression_parses(tmp_path: Path) -> None:
    """promtool parses each expression (Grafana variables substituted) as a recording rule."""
    sources = promql_sources()
    rules = [
        {"record": f"check:expr_{i}:parse", "expr": expr} for i, (_, expr) in enumerate(sources)
    ]
    path = tmp_path / "all-promql.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "all-promql", "rules": rules}]}))
    result = run(tool("promtool"), "check", "rules", path)
    assert f"{len(sources)} rules found" in result.stdout
