"""``kill -HUP`` reloads the policy file of a running server; a broken file keeps the old one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import Receiver
from tests.workers import ROOT, environment, free_port, serving, stop, wait_for, write_policy

pytestmark = pytest.mark.slow


def policies(port: int) -> dict[str, object]:
    answer: dict[str, object] = httpx.get(f"http://127.0.0.1:{port}/api/v1/policies").json()
    return answer


def reload_errors(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    line = next(
        x
        for x in text.splitlines()
        if x.startswith('lead_sla_policy_reloads_total{outcome="error"}')
    )
    return float(line.split()[-1])


async def test_sighup_reloads_and_refuses_a_broken_file(
    database_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    policy = write_policy(tmp_path)
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "LEAD_SLA_DATABASE_URL": database_url,
        "LEAD_SLA_POLICY_FILE": str(policy),
        "LEAD_SLA_LOG_LEVEL": "WARNING",
        **environment(receiver),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        await wait_for(lambda: serving(port), 30, "the server to start")
        first = policies(port)["version"]

        policy.write_text(policy.read_text().replace("target: 1h", "target: 2h"))
        process.send_signal(signal.SIGHUP)
        await wait_for(lambda: policies(port)["version"] != first, 10, "the reload")
        second = policies(port)["version"]
        assert "target 2h" in str(policies(port)["policies"])

        policy.write_text("policies: [{id: broken}]\n")
        process.send_signal(signal.SIGHUP)
        await wait_for(lambda: reload_errors(port) == 1, 10, "the refused reload")
        assert policies(port)["version"] == second  # still serving the last good file
        assert process.poll() is None
    finally:
        stop(process)
