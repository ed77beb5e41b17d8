"""CLI commands that work on the database without a running server: ``policies recompute``,
``explain`` and ``backtest``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from service.backtest import backtest
from service.clock import SystemClock
from service.config import Settings
from service.db import create_engine, read_session_factory, session_factory
from service.explaining import NotFound, explain_stored_cycle, explanation_json
from service.policies import PolicyStore, load
from service.policy_file import PolicyFileError
from service.recompute import recompute_open_cycles


def run(settings: Settings, args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(settings, args))
    except PolicyFileError as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        return 1
    except NotFound as exc:
        print(f"lead-sla: {exc}", file=sys.stderr)
        return 1


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    engine = create_engine(settings.database_url)
    sessions = session_factory(engine)
    reads = read_session_factory(engine)  # explain and backtest never wait for a busy server
    current = PolicyStore(settings.policy_file, settings.environment()).current
    now = SystemClock().now()
    try:
        if args.command == "policies":
            result = await recompute_open_cycles(sessions, current, now)
            print(f"recomputed open cycles of {result.leads} lead(s) under version "
                  f"{result.version}: {result.cycles_changed} changed")  # fmt: skip
        elif args.command == "explain":
            async with reads() as session:
                explanation = await explain_stored_cycle(
                    session, current, args.source, args.lead_id, args.policy, args.cycle, now
                )
            _print_explanation(explanation_json(explanation))
        else:
            from pathlib import Path

            candidate = load(Path(args.policies), settings.environment())
            report = await backtest(reads, current, candidate, args.start, args.end, now)
            print(json.dumps(report, indent=2))
    finally:
        await engine.dispose()
    return 0


def _print_explanation(data: dict[str, object]) -> None:
    print(f"{data['policy']} cycle {data['cycle']} ({data['state']}, calendar {data['calendar']})")
    print(f"  started {data['started_at']}  due {data['due_at']}  until {data['until']}")
    intervals = data["intervals"]
    assert isinstance(intervals, list)
    for item in intervals:
        mark = "+" if item["counted"] else "-"
        note = f"  [{item['note']}]" if item["note"] else ""
        print(f"  {mark} {item['start']} .. {item['end']}  {item['seconds']:>9.0f}s  "
              f"{item['reason']}{note}")  # fmt: skip
    print(f"  elapsed {data['elapsed_business_seconds']:.0f}s of "
          f"{data['target_business_seconds']}s, remaining "
          f"{data['remaining_business_seconds']:.0f}s")  # fmt: skip
