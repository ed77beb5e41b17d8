"""The container image definition: hadolint-clean and built the way deploy.md says."""

from __future__ import annotations

import re

from tests.deploy.tools import ROOT, run, tool

DOCKERFILE = ROOT / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def test_hadolint_passes() -> None:
    run(tool("hadolint"), "--config", ROOT / ".hadolint.yaml", DOCKERFILE)


def test_multi_stage_on_python_slim_with_the_wheel_built_in_the_builder() -> None:
    instructions = _instructions()
    stages = [args for op, args in instructions if op == "FROM"]
    assert stages == [
        "python:${PYTHON_VERSION}-slim AS builder",
        "python:${PYTHON_VERSION}-slim AS runtime",
    ]
    assert ("ARG", "PYTHON_VERSION=3.12") in instructions
    runs = " ".join(args for op, args in instructions if op == "RUN")
    assert "pip wheel" in runs
    copies = [args for op, args in instructions if op == "COPY"]
    assert copies[-1] == "--from=builder /opt/lead-sla /opt/lead-sla"


def test_runs_as_non_root_with_a_python_healthcheck_and_the_cli_entrypoint() -> None:
    instructions = dict(_instructions())  # the last of each instruction wins, as in Docker
    user = instructions["USER"].split(":")[0]
    assert user not in {"root", "0"}
    assert "python" in instructions["HEALTHCHECK"] and "/healthz" in instructions["HEALTHCHECK"]
    assert "curl" not in instructions["HEALTHCHECK"]
    assert instructions["ENTRYPOINT"] == '["lead-sla"]'
    assert instructions["CMD"] == '["serve", "--host", "0.0.0.0"]'


def test_dockerignore_lets_in_only_what_the_build_needs() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!service/"} <= set(lines)
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text(), re.M)
    for sources in copied:
        for source in sources.split():
            assert f"!{source.rstrip('/')}" in {line.rstrip("/") for line in lines}, source
