"""``service/sla/`` is the functional core: no I/O, no frameworks, no clock reads. Checked on the
source itself, so a new module is covered the day it is added."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "service" / "sla"
FORBIDDEN_MODULES = frozenset({
    "sqlalchemy", "fastapi", "starlette", "httpx", "apscheduler", "asyncio", "os", "time",
    "socket", "prometheus_client", "requests", "subprocess", "aiosqlite", "asyncpg", "service",
})  # fmt: skip
ALLOWED_SERVICE_MODULES = "service.sla"
# attribute calls that read the clock: (object name, attribute)
CLOCK_READS = frozenset({
    ("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"), ("date", "today"),
    ("time", "time"), ("time", "monotonic"), ("time", "perf_counter"), ("time", "time_ns"),
})  # fmt: skip
FORBIDDEN_CALLS = frozenset({"open", "input", "print", "now", "utcnow"})
MODULES = sorted(CORE.glob("*.py"))


def imported(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def violations(source: str) -> list[str]:
    tree = ast.parse(source)
    found = []
    for name in imported(tree):
        top = name.split(".")[0]
        if top in FORBIDDEN_MODULES and not name.startswith(ALLOWED_SERVICE_MODULES):
            found.append(f"imports {name}")
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute):
            owner = func.value
            owner_name = owner.id if isinstance(owner, ast.Name) else (
                owner.attr if isinstance(owner, ast.Attribute) else None
            )  # fmt: skip
            if (owner_name, func.attr) in CLOCK_READS:
                found.append(f"calls {owner_name}.{func.attr}() on line {node.lineno}")
        elif isinstance(func, ast.Name) and func.id in FORBIDDEN_CALLS:
            found.append(f"calls {func.id}() on line {node.lineno}")
    return found


def test_the_core_has_modules() -> None:
    assert {"engine.py", "types.py", "policy.py", "calendar.py"} <= {m.name for m in MODULES}


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.name)
def test_core_module_is_pure(module: Path) -> None:
    assert violations(module.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    "source",
    [
        "import os",
        "import sqlalchemy.orm",
        "from fastapi import Depends",
        "from starlette.requests import Request",
        "import httpx as h",
        "from apscheduler.schedulers.asyncio import AsyncIOScheduler",
        "import asyncio",
        "from time import monotonic",
        "import socket",
        "from prometheus_client import Counter",
        "from service.db import create_engine",
        "from datetime import datetime\nx = datetime.now()",
        "import datetime\nx = datetime.datetime.now(datetime.UTC)",
        "import datetime\nx = datetime.date.today()",
        "def f():\n    import time\n    return time.time()",
        "with open('x') as f:\n    pass",
    ],
)
def test_the_checker_catches(source: str) -> None:
    assert violations(source), source


def test_the_checker_allows_the_core_and_the_standard_library() -> None:
    source = (
        "from datetime import UTC, datetime, timedelta\n"
        "from zoneinfo import ZoneInfo\n"
        "from service.sla.policy import Policy\n"
        "x = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=1)\n"
    )
    assert violations(source) == []
