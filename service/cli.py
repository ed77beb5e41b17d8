"""``lead-sla``: serve, migrate, check policies, and send example traffic."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from service.config import LOOPBACK_HOSTS, Settings

if TYPE_CHECKING:
    from service.sla.policy import PolicySet


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lead-sla", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="apply migrations, then serve API and scheduler")
    serve.add_argument("--role", choices=("api", "worker", "all"), default="all")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--skip-migrations", action="store_true", help="when a separate job runs `migrate`"
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="API processes sharing the port, one per core (--role api only; scale the sweep "
        "with more --role worker processes instead)",
    )

    commands.add_parser("migrate", help="alembic upgrade head on LEAD_SLA_DATABASE_URL")

    policies = commands.add_parser("policies", help="policy file tools")
    policy_commands = policies.add_subparsers(dest="policy_command", required=True)
    check = policy_commands.add_parser("check", help="validate a policy file")
    check.add_argument("file")
    policy_commands.add_parser(
        "recompute", help="re-derive open cycles under the loaded policy file's version"
    )

    explain = commands.add_parser("explain", help="why a lead's deadline is where it is")
    explain.add_argument("source")
    explain.add_argument("lead_id")
    explain.add_argument("policy")
    explain.add_argument("--cycle", type=int, default=None, help="default: the latest")

    backtest = commands.add_parser(
        "backtest", help="run a candidate policy file over stored history, beside the current"
    )
    backtest.add_argument("--policies", required=True, help="the candidate policy file")
    backtest.add_argument("--from", dest="start", required=True, type=_instant)
    backtest.add_argument("--to", dest="end", required=True, type=_instant)

    simulate = commands.add_parser("simulate", help="post realistic signed traffic to a server")
    simulate.add_argument(
        "--url", default="http://127.0.0.1:8000", help="the server (default %(default)s)"
    )
    simulate.add_argument("--leads", type=int, default=20, help="default %(default)s")
    simulate.add_argument("--seed", type=int, default=None, help="repeat the same stories")
    simulate.add_argument(
        "--hours-back",
        type=float,
        default=3.0,
        help="leads turn MQL over this many past business hours (of the first response "
        "policy's calendar), so some deadlines have already passed and breaches fire at once "
        "(default %(default)s)",
    )

    args = parser.parse_args(argv)
    try:
        status = _run(args)
        sys.stdout.flush()  # a reader gone away shows here, not as a traceback on exit
        return status
    except BrokenPipeError:
        # The reader went away (``lead-sla policies check FILE | head``): stop quietly, and
        # point stdout at /dev/null so that flushing it on exit does not fail a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _run(args: argparse.Namespace) -> int:
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # one line per tick is noise
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # lines per import
    if args.command == "serve":
        return _serve(settings, args.role, args.host, args.port, args.skip_migrations, args.workers)
    if args.command == "migrate":
        return _migrate(settings)
    if args.command == "policies" and args.policy_command == "check":
        return _check_policies(args.file, settings)
    if args.command in ("policies", "explain", "backtest"):
        from service import offline

        return offline.run(settings, args)
    if args.command == "simulate":
        from service.simulate import run_simulation

        return run_simulation(settings, args.url, args.leads, args.seed, args.hours_back)
    return 2


def _instant(text: str) -> datetime:
    """A date (midnight UTC) or an ISO instant; naive instants are taken as UTC."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _serve(
    settings: Settings, role: str, host: str, port: int, skip_migrations: bool, workers: int
) -> int:
    import uvicorn

    from service.app import create_app
    from service.db import sqlite_path
    from service.worker_lock import WorkerAlreadyRunning, WorkerLock

    if not settings.parsed_api_keys() and host not in LOOPBACK_HOSTS and role != "worker":
        print(
            f"lead-sla: refusing to serve the API on {host} without API keys; set "
            "LEAD_SLA_API_KEYS (e.g. 'key1:admin,key2:read') or bind to 127.0.0.1",
            file=sys.stderr,
        )
        return 2
    if workers != 1 and role != "api":
        print("lead-sla: --workers needs --role api", file=sys.stderr)
        return 2
    if workers < 1:
        print("lead-sla: --workers must be at least 1", file=sys.stderr)
        return 2
    path = sqlite_path(settings.database_url)
    if path is not None and role != "api":
        probe = WorkerLock(path)
        try:
            probe.acquire()
        except WorkerAlreadyRunning as exc:
            print(f"lead-sla: {exc}", file=sys.stderr)
            return 2
        probe.release()
    from service.policies import policy_file_path

    # The file the server will run, checked before anything starts.
    if _load_policies(policy_file_path(settings.policy_file), settings) is None:
        return 1
    if not skip_migrations and (code := _migrate(settings)) != 0:
        return code
    log_level = settings.log_level.lower()
    if workers > 1:
        from service import api_processes

        return api_processes.serve(host, port, workers, log_level)
    app = create_app(settings, role=role, serving=True)  # type: ignore[arg-type]
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
    return 0


def _migrate(settings: Settings) -> int:
    """``alembic upgrade head``; a database that cannot be reached is one line, not a
    traceback."""
    from service.db import database_unreachable, describe_error, migrate, safe_url

    try:
        migrate(settings.database_url)
    except Exception as error:
        if not database_unreachable(error):
            raise
        print(
            f"lead-sla: cannot migrate the database at {safe_url(settings.database_url)}: "
            f"{describe_error(error)}",
            file=sys.stderr,
        )
        return 1
    return 0


def _load_policies(file: str | Path, settings: Settings) -> PolicySet | None:
    """The policy file, or None after printing its errors as ``FILE:LINE: message``."""
    from service.policy_file import PolicyFileError, load_policy_file

    try:
        return load_policy_file(file, settings.environment())
    except PolicyFileError as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        return None


def _check_policies(file: str, settings: Settings) -> int:
    from service.policy_file import summarize

    policy_set = _load_policies(file, settings)
    if policy_set is None:
        return 1
    for line in summarize(policy_set):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
