"""The metric names the dashboard and the rules use exist, and every metric is documented.

The registry is the one importing ``service.metrics`` fills; exposed names follow the text
format: counters end in ``_total``, histograms expose ``_bucket``, ``_sum`` and ``_count``.
"""

from __future__ import annotations

import re

import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

import service.metrics as metrics
from tests.deploy.promql import RULES, promql_sources
from tests.deploy.tools import DOCS

METRICS_DOC = DOCS / "metrics.md"
PREFIX = "lead_sla_"
# Series Prometheus itself adds to every target.
SCRAPE_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
# A metric name: not part of a recording rule's name (those have ':'), not a function call.
_NAME = re.compile(r"(?<![\w:])([a-zA-Z_][a-zA-Z0-9_]*)(?![\w:])(?!\s*\()")
_KEYWORDS = frozenset(
    [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
    ]
)
_RECORDED = re.compile(r"(?<![\w:])([a-zA-Z_][a-zA-Z0-9_]*:[a-zA-Z0-9_:]+)")


def registry_families() -> dict[str, str]:
    """lead_sla_ family name -> type, as the default registry reports them."""
    return {
        family.name: family.type for family in REGISTRY.collect() if family.name.startswith(PREFIX)
    }


def exposed_series(name: str, kind: str) -> set[str]:
    if kind == "counter":
        return {f"{name}_total"}
    if kind == "histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return {name}


def exposed_name(name: str, kind: str) -> str:
    """How a family is named in docs and queries: counters with _total, others as they are."""
    return f"{name}_total" if kind == "counter" else name


def _declared_labels() -> dict[str, tuple[str, ...]]:
    found: dict[str, tuple[str, ...]] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            family = next(iter(value.describe()))
            found[exposed_name(family.name, family.type)] = tuple(value._labelnames)
    return found


def _metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values are not names
    without_matchers = re.sub(r"\{[^}]*\}", "", without_strings)  # nor are label names
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_matchers)
    groupings = r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"
    without_groupings = re.sub(groupings, "", without_ranges)
    names = set(_NAME.findall(without_groupings))
    return {n for n in names if n not in _KEYWORDS}


def test_registry_has_the_contract_metrics() -> None:
    families = registry_families()
    assert families["lead_sla_webhook_requests"] == "counter"
    assert families["lead_sla_time_to_stop_business_seconds"] == "histogram"
    assert families["lead_sla_open_cycles"] == "gauge"


def test_every_metric_used_by_the_dashboard_and_rules_exists() -> None:
    exposed = {
        series
        for name, kind in registry_families().items()
        for series in exposed_series(name, kind)
    }
    recorded = {
        rule["record"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }
    unknown: list[str] = []
    for where, expr in promql_sources():
        for name in _metric_names(expr):
            if name.startswith(PREFIX) and name not in exposed:
                unknown.append(f"{where}: {name}")
            elif not name.startswith(PREFIX) and name not in SCRAPE_SERIES:
                unknown.append(f"{where}: {name} (not a lead-sla metric)")
        for name in _RECORDED.findall(expr):
            if name not in recorded:
                unknown.append(f"{where}: {name} (no recording rule)")
    assert unknown == []


def test_every_metric_is_documented_with_its_type_and_labels() -> None:
    rows = _documented_rows()
    declared = _declared_labels()
    for name, kind in registry_families().items():
        shown = exposed_name(name, kind)
        assert shown in rows, f"{shown} is not in docs/operations/metrics.md"
        doc_kind, doc_labels = rows[shown]
        assert doc_kind == kind, f"{shown}: documented as {doc_kind}, is a {kind}"
        assert doc_labels == set(declared[shown]), (
            f"{shown}: labels {doc_labels} vs {declared[shown]}"
        )
    stale = set(rows) - {exposed_name(n, k) for n, k in registry_families().items()}
    assert not stale, f"documented but not in service/metrics.py: {stale}"


def _documented_rows() -> dict[str, tuple[str, set[str]]]:
    """``| `name` | type | `label`, `label` | ...`` rows of the metrics tables."""
    rows: dict[str, tuple[str, set[str]]] = {}
    for line in METRICS_DOC.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.fullmatch(rf"`{PREFIX}\w+`", cells[0]):
            kind = cells[1].split()[0].lower()
            labels = set(re.findall(r"`(\w+)`", cells[2]))
            rows[cells[0].strip("`")] = (kind, labels)
    return rows


def test_the_name_extractor_finds_metrics_and_nothing_else() -> None:
    expr = (
        'histogram_quantile(0.9, sum by (policy, le) (rate(lead_sla_x_bucket{team=~"a|b"}[5m])))'
        ' / on (policy) group_left policy:lead_sla_y:rate5m > 0.5 and absent(up{job="lead-sla"})'
    )
    assert _metric_names(expr) == {"lead_sla_x_bucket", "up"}
    assert _RECORDED.findall(expr) == ["policy:lead_sla_y:rate5m"]
