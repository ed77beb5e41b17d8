"""Every PromQL expression lead-sla ships: the Grafana dashboard's queries and variables, and the
Prometheus rules. Grafana's variables are replaced by values any Prometheus accepts, so the
expressions can be parsed by promtool or run against a live server.

``all_promql()`` is the list; ``promql_sources()`` says where each came from, for messages.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "lead-sla.json"
RULES = ROOT / "deploy" / "prometheus" / "rules" / "lead-sla.rules.yaml"

# Grafana's interval and range macros become a fixed duration; longest names first.
_MACROS = ("$__rate_interval", "$__interval", "$__range")
_MACRO_VALUE = "5m"
# Template variables in all three of Grafana's syntaxes: ${var} / ${var:format}, $var, [[var]].
_VARIABLE = re.compile(r"\$\{\w+(?::\w+)?\}|\$\w+|\[\[\w+\]\]")
_VARIABLE_VALUE = ".*"  # the dashboard's variables are regex matchers (=~) with allValue .*
_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<selector>.+),\s*(?P<label>\w+)\s*\)\s*$", re.S)


def substitute(expr: str) -> str:
    """Replace Grafana macros by ``5m`` and template variables by ``.*``."""
    for macro in _MACROS:
        expr = expr.replace(macro, _MACRO_VALUE)
    leftover = re.search(r"\$__\w+", expr)
    if leftover:
        raise ValueError(f"unsupported Grafana macro {leftover.group()} in {expr!r}")
    return _VARIABLE.sub(_VARIABLE_VALUE, expr)


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # panels inside a collapsed row


def dashboard_promql(path: Path = DASHBOARD) -> Iterator[tuple[str, str]]:
    dashboard = json.loads(path.read_text())
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if variable.get("type") == "query" and isinstance(query, str):
            match = _LABEL_VALUES.match(query)
            # label_values(selector, label) asks for the series of selector: run that selector.
            expr = match.group("selector") if match else query
            yield f"dashboard variable {variable['name']}", substitute(expr)
    for panel in _panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                where = (
                    f"dashboard panel {panel['id']} ({panel.get('title')}) query {target['refId']}"
                )
                yield where, substitute(target["expr"])


def rules_promql(path: Path = RULES) -> Iterator[tuple[str, str]]:
    for group in yaml.safe_load(path.read_text())["groups"]:
        for rule in group["rules"]:
            name = rule.get("record") or rule.get("alert")
            yield f"rule group {group['name']} {name}", str(rule["expr"]).strip()


def promql_sources() -> list[tuple[str, str]]:
    """(where, expression) for every expression of the dashboard and the rules."""
    return [*dashboard_promql(), *rules_promql()]


def all_promql() -> list[str]:
    return [expr for _, expr in promql_sources()]
