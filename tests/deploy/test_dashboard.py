"""The Grafana dashboard and its provisioning."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.tools import DEPLOY, SCHEMAS

GRAFANA = DEPLOY / "grafana"
DASHBOARD_PATH = GRAFANA / "dashboards" / "lead-sla.json"
DASHBOARD: dict[str, Any] = json.loads(DASHBOARD_PATH.read_text())
PANELS = [p for p in DASHBOARD["panels"] if p["type"] != "row"]


def _validator() -> jsonschema.Draft7Validator:
    schema = json.loads((SCHEMAS / "grafana" / "dashboard.jsonschema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_dashboard_matches_grafanas_schema() -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in _validator().iter_errors(DASHBOARD)]
    assert errors == []


def test_schema_rejects_a_broken_dashboard() -> None:
    broken = copy.deepcopy(DASHBOARD)
    broken["panels"][1]["gridPos"]["w"] = 30
    broken["templating"]["list"][1]["refresh"] = 5
    assert len(list(_validator().iter_errors(broken))) >= 2


def test_file_is_stable_hand_readable_json() -> None:
    text = DASHBOARD_PATH.read_text()
    assert text == json.dumps(DASHBOARD, indent=2, ensure_ascii=False) + "\n"
    assert DASHBOARD["uid"] == "lead-sla"
    assert "id" not in DASHBOARD  # Grafana assigns it per instance


def test_panel_ids_are_unique_and_every_panel_is_described() -> None:
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for panel in PANELS:
        assert panel.get("description", "").strip(), f"panel {panel['id']} has no description"
        assert panel["targets"], f"panel {panel['id']} has no query"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_panels_do_not_overlap() -> None:
    taken: dict[tuple[int, int], int] = {}
    for panel in DASHBOARD["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["id"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in taken, f"panels {taken[(x, y)]} and {panel['id']} overlap"
                taken[(x, y)] = panel["id"]


def test_policy_and_team_variables_come_from_label_values() -> None:
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for name in ("policy", "team"):
        variable = variables[name]
        assert variable["type"] == "query"
        assert variable["query"].startswith("label_values(")
        assert variable["query"].rstrip(")").endswith(f", {name}")
        assert variable["includeAll"] and variable["allValue"] == ".*"


def _exprs() -> list[str]:
    return [t["expr"] for p in PANELS for t in p["targets"]]


@pytest.mark.parametrize(
    "needle",
    [
        'increase(lead_sla_cycles_met_total{policy=~"$policy", team=~"$team"}[$__range])',
        'increase(lead_sla_cycles_breached_total{policy=~"$policy", team=~"$team"}[$__range])',
        "rate(lead_sla_cycles_breached_total",
        "lead_sla_open_cycles",
        "lead_sla_at_risk_cycles",
        "histogram_quantile(0.5, sum by (policy, le) (rate(lead_sla_time_to_stop_business_seconds",
        "histogram_quantile(0.9, sum by (policy, le) (rate(lead_sla_time_to_stop_business_seconds",
        "lead_sla_reminders_total",
        "sum by (source, outcome) (rate(lead_sla_webhook_requests_total",
        "sum by (channel, outcome) (rate(lead_sla_notifications_total",
        "lead_sla_outbox_dead",
        "lead_sla_timer_fire_lag_seconds_bucket",
    ],
)
def test_dashboard_shows(needle: str) -> None:
    assert any(needle in expr for expr in _exprs()), needle


def test_provisioning_points_at_the_dashboard_and_prometheus() -> None:
    provider = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "lead-sla.yaml").read_text()
    )
    (entry,) = provider["providers"]
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    mounts = dict(
        v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"] if v.startswith(".")
    )
    assert mounts["./grafana/dashboards"] == entry["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    sources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
