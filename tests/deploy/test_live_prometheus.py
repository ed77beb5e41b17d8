"""The dashboard and the rules against a real Prometheus scraping a running lead-sla.

A lead-sla server (built-in example policies, SQLite) and Debian's ``prometheus`` run on
loopback. Once Prometheus has scraped the server's zero-valued series, the server receives
signed example traffic and one request with a bad signature; the sweeper breaches the
backdated cycles. Then:

- every PromQL expression of the dashboard and the rules runs through ``/api/v1/query`` and
  must parse (all failures are reported at once, with where each expression comes from);
- every query of the panels in the rows *Compliance*, *Breaches and open work* and *Intake*
  returns at least one sample with a number (not NaN), and the counters those panels show have
  moved with the traffic;
- Prometheus loads every rule and evaluates it without error.

Prometheus samples every second here; rates over the dashboard's 5-minute windows see the
increments because the series existed (at zero) before the traffic arrived.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from service.simulate import signed_post
from tests.deploy.promql import DASHBOARD, RULES, promql_sources
from tests.deploy.tools import ROOT

pytestmark = pytest.mark.slow

LEAD_SLA = [sys.executable, "-m", "service"]  # the `lead-sla` command of this checkout
PROMETHEUS_HINT = "apt-get install -y --no-install-recommends prometheus  (Debian)"
SECRET = "whsec_" + base64.b64encode(b"live-prometheus-test-secret-0123").decode()
WRONG_SECRET = "whsec_" + base64.b64encode(b"not-the-secret-of-this-server-99").decode()

# Rows of the dashboard whose panels must show data after the traffic.
REQUIRED_ROWS = ("Compliance", "Breaches and open work", "Intake")
# (panel id, query refId) -> label sets that must each match a sample with a value above zero:
# the traffic is visible on the panels, not only present as zero-valued series.
MOVED: dict[tuple[int, str], list[dict[str, str]]] = {
    (3, "A"): [{}],  # cycles met over the range
    (3, "B"): [{}],  # cycles breached over the range
    (5, "A"): [{"policy": "disposition"}],  # breaches per hour
    (8, "A"): [{"policy": "first-touch"}, {"policy": "disposition"}],  # cycles started
    (12, "A"): [
        {"source": "generic", "outcome": "accepted"},
        {"source": "generic", "outcome": "unauthorized"},
    ],
    (13, "A"): [{"source": "generic", "outcome": "unauthorized"}],
    (14, "A"): [{"source": "generic", "type": "lead.status_changed"}],  # events stored
}

STARTUP_TIMEOUT = 30.0  # each of: lead-sla ready, Prometheus ready and scraping
DATA_TIMEOUT = 30.0  # traffic visible on every checked panel
STOP_TIMEOUT = 10.0

T = TypeVar("T")


# --- processes --------------------------------------------------------------------------------


class Processes:
    """Child processes, each in its own process group with its output in a log file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = self.directory / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                args,
                cwd=self.directory,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.running[name] = process
        return process

    def check_alive(self) -> None:
        for name, process in self.running.items():
            if process.poll() is not None:
                pytest.fail(f"{name} exited with {process.returncode}\n{self.logs()}", False)

    def logs(self, lines: int = 40) -> str:
        parts = []
        for name in self.running:
            text = (self.directory / f"{name}.log").read_text(errors="replace").splitlines()
            parts.append(f"--- {name}.log (last {lines} lines) ---\n" + "\n".join(text[-lines:]))
        return "\n".join(parts)

    def stop_all(self) -> None:
        for process in reversed(self.running.values()):
            _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group, SIGKILL if it is still there after STOP_TIMEOUT."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)  # start_new_session: the group id is the leader's pid
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(STOP_TIMEOUT)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    children = Processes(tmp_path)
    try:
        yield children
    finally:
        children.stop_all()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(what: str, probe: Callable[[], T | None], timeout: float, processes: Processes) -> T:
    """Poll ``probe`` until it returns a value; fail naming ``what`` (with the logs) on time-out
    or when a child process dies."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        processes.check_alive()
        try:
            value = probe()
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            value, last_error = None, f" (last error: {exc!r})"
        if value is not None:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s: {what}{last_error}\n{processes.logs()}")
        time.sleep(0.25)


# --- Prometheus answers -------------------------------------------------------------------------


def _samples(data: dict[str, Any]) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample of an instant query's ``data``."""
    kind, result = data["resultType"], data["result"]
    if kind == "vector":
        return [(item["metric"], float(item["value"][1])) for item in result]
    if kind == "scalar":
        return [({}, float(result[1]))]
    if kind == "matrix":
        return [(item["metric"], float(v)) for item in result for _, v in item["values"]]
    return []


def _panel_rows() -> dict[int, str]:
    """Panel id -> the title of the row it sits in (by position, or nested in a collapsed row)."""
    rows: dict[int, str] = {}
    current = ""
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        if panel["type"] == "row":
            current = panel.get("title", "")
            for child in panel.get("panels", []):
                rows[child["id"]] = current
        else:
            rows[panel["id"]] = current
    return rows


_WHERE = re.compile(r"^dashboard panel (?P<id>\d+) \(.*\) query (?P<ref>\w+)$")


def _panel_queries() -> dict[tuple[int, str], tuple[str, str]]:
    """(panel id, refId) -> (where, expression) for every panel query of the dashboard."""
    queries = {}
    for where, expr in promql_sources():
        match = _WHERE.match(where)
        if match:
            queries[(int(match["id"]), match["ref"])] = (where, expr)
    return queries


# --- traffic ------------------------------------------------------------------------------------


def _event(lead: str, step: str, kind: str, at: datetime, **parts: Any) -> dict[str, Any]:
    return {
        "event_id": f"{lead}-{step}",
        "type": kind,
        "occurred_at": at.isoformat(),
        "lead": {"id": lead, "team": "emea", "owner": "rep-1", "country": "BR"},
        **parts,
    }


def _day_old_leads(now: datetime) -> list[dict[str, Any]]:
    """Two MQLs of 30 hours ago. The disposition policy (24 h on a round-the-clock calendar)
    decides both whatever the hour of the run: one was accepted (sal) after ten minutes, so it
    is met; the other never was, so it breaches at the first sweep. (The example traffic's
    first-touch breaches depend on business hours having passed in its four hours of history.)"""
    created = now - timedelta(hours=30)
    mql = created + timedelta(minutes=1)
    mql_status = {"from": "new", "to": "mql"}
    return [
        _event("LIVE-MET", "created", "lead.created", created, status={"to": "new"}),
        _event("LIVE-MET", "mql", "lead.status_changed", mql, status=mql_status),
        _event(
            "LIVE-MET",
            "sal",
            "lead.status_changed",
            mql + timedelta(minutes=10),
            status={"from": "mql", "to": "sal"},
        ),
        _event("LIVE-BREACH", "created", "lead.created", created, status={"to": "new"}),
        _event("LIVE-BREACH", "mql", "lead.status_changed", mql, status=mql_status),
    ]


def _send_traffic(service_url: str, env: dict[str, str], processes: Processes) -> None:
    simulate = subprocess.run(
        [*LEAD_SLA, "simulate", "--url", service_url, "--leads", "30", "--hours-back", "4"],
        cwd=processes.directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert simulate.returncode == 0, f"simulate failed:\n{simulate.stdout}\n{simulate.stderr}"
    url = f"{service_url}/webhooks/generic"
    with httpx.Client(timeout=10) as client:
        events = _day_old_leads(datetime.now(UTC))
        accepted = signed_post(client, url, SECRET, {"events": events})
        assert accepted.status_code == 202, accepted.text
        rejected = signed_post(client, url, WRONG_SECRET, {"events": events})
        assert rejected.status_code == 401, rejected.text


# --- the test -----------------------------------------------------------------------------------


def _prometheus_config(path: Path, service_port: int) -> Path:
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES.parent / "*.yaml")],
        "scrape_configs": [
            {
                "job_name": "lead-sla",  # the alerts and the dashboard select job="lead-sla"
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [f"127.0.0.1:{service_port}"]}],
            }
        ],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_dashboard_and_rules_on_a_live_prometheus(processes: Processes, tmp_path: Path) -> None:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.fail(f"prometheus is not installed; install it with: {PROMETHEUS_HINT}", False)

    service_port, prometheus_port = _free_port(), _free_port()
    service_url = f"http://127.0.0.1:{service_port}"
    prometheus_url = f"http://127.0.0.1:{prometheus_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEAD_SLA_")}
    env |= {
        "PYTHONPATH": str(ROOT),
        "LEAD_SLA_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'lead-sla.db'}",
        "LEAD_SLA_WEBHOOK_SECRET_GENERIC": SECRET,
        "LEAD_SLA_GAUGES_INTERVAL_SECONDS": "1",
        "LEAD_SLA_LOG_LEVEL": "WARNING",  # notifications go to the log channel at INFO
    }
    processes.start(
        "lead-sla",
        [*LEAD_SLA, "serve", "--host", "127.0.0.1", "--port", str(service_port)],
        env,
    )
    processes.start(
        "prometheus",
        [
            prometheus,
            f"--config.file={_prometheus_config(tmp_path / 'prometheus.yml', service_port)}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
        ],
        env,
    )

    with httpx.Client(timeout=5) as http:

        def query(expr: str) -> dict[str, Any]:
            return http.get(f"{prometheus_url}/api/v1/query", params={"query": expr}).json()

        def ready(url: str) -> bool | None:
            return http.get(url).status_code == 200 or None

        _wait_for(
            "lead-sla /readyz", lambda: ready(f"{service_url}/readyz"), STARTUP_TIMEOUT, processes
        )
        _wait_for(
            "prometheus /-/ready",
            lambda: ready(f"{prometheus_url}/-/ready"),
            STARTUP_TIMEOUT,
            processes,
        )

        # The target is up and Prometheus holds at least two scrapes of it: the zero-valued
        # series predate the traffic, so increase() and rate() count all of it.
        def scraped_twice() -> bool | None:
            targets = http.get(f"{prometheus_url}/api/v1/targets").json()["data"]
            mine = [t for t in targets["activeTargets"] if t["labels"]["job"] == "lead-sla"]
            if not mine or mine[0]["health"] != "up":
                state = f"{mine[0]['health']}: {mine[0]['lastError']}" if mine else "not active"
                raise ValueError(f"target lead-sla {state}")
            scrapes = _samples(query('count_over_time(up{job="lead-sla"}[1m])')["data"])
            return (bool(scrapes) and scrapes[0][1] >= 2) or None

        _wait_for(
            "two scrapes of lead-sla by prometheus", scraped_twice, STARTUP_TIMEOUT, processes
        )

        _send_traffic(service_url, env, processes)

        # Every expression parses and evaluates.
        sources = promql_sources()
        assert sources, "no PromQL expression found in the dashboard and rules"
        errors = []
        for where, expr in sources:
            answer = query(expr)
            if answer.get("status") != "success":
                errors.append(
                    f"{where}: {answer.get('errorType')}: {answer.get('error')}\n    {expr}"
                )

        # The panels of the required rows show the traffic, once Prometheus has scraped it.
        rows = _panel_rows()
        missing_rows = set(REQUIRED_ROWS) - set(rows.values())
        assert not missing_rows, f"dashboard rows not found: {sorted(missing_rows)}"
        panels = _panel_queries()
        checked = {key: v for key, v in panels.items() if rows.get(key[0]) in REQUIRED_ROWS}
        unknown = set(MOVED) - set(checked)
        assert not unknown, f"panel queries not found in the required rows: {sorted(unknown)}"

        def data_problems() -> list[str]:
            problems = []
            for key, (where, expr) in sorted(checked.items()):
                answer = query(expr)
                if answer.get("status") != "success":
                    continue  # reported with the parse errors
                samples = _samples(answer["data"])
                if not any(math.isfinite(value) for _, value in samples):
                    shown = "no series" if not samples else f"only {samples}"
                    problems.append(f"{where}: no data ({shown})\n    {expr}")
                    continue
                for labels in MOVED.get(key, []):
                    if not any(
                        value > 0 and labels.items() <= metric.items() for metric, value in samples
                    ):
                        problems.append(f"{where}: no sample above 0 for {labels}: {samples}")
            return problems

        def rule_problems() -> list[str] | None:
            groups = http.get(f"{prometheus_url}/api/v1/rules").json()["data"]["groups"]
            loaded = [rule for group in groups for rule in group["rules"]]
            if any(rule["health"] == "unknown" for rule in loaded):
                return None  # not evaluated yet
            expected = sum(1 for where, _ in sources if where.startswith("rule group "))
            problems = [
                f"rule {rule['name']}: {rule['health']}: {rule.get('lastError')}"
                for rule in loaded
                if rule["health"] != "ok"
            ]
            if len(loaded) != expected:
                problems.append(f"prometheus loaded {len(loaded)} rules, the files have {expected}")
            return problems

        deadline = time.monotonic() + DATA_TIMEOUT
        while True:
            processes.check_alive()
            problems = data_problems()
            rules = rule_problems()
            if (not problems and rules is not None) or time.monotonic() > deadline:
                break
            time.sleep(1)

    report = []
    if errors:
        report.append(f"{len(errors)} of {len(sources)} expressions failed on Prometheus:")
        report.extend(errors)
    if problems:
        report.append(f"panel queries without data or traffic after {DATA_TIMEOUT:.0f}s:")
        report.extend(problems)
    if rules is None:
        report.append("prometheus had not evaluated every rule in time")
    elif rules:
        report.extend(rules)
    if report:
        pytest.fail("\n".join(report) + "\n" + processes.logs(20), False)
