"""APScheduler ticks. Timers live in the database; the scheduler only wakes the sweep, the
dispatcher and the snapshot refresh — a handful of in-memory jobs, never one job per lead."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from service import metrics
from service.db import database_unreachable, describe_error
from service.failure_streaks import FailureStreak
from service.gauges import refresh_gauges
from service.notify.dispatcher import dispatch
from service.retention import purge_expired
from service.runtime import Runtime
from service.sweep import sweep
from service.volume_jobs import evaluate_volume

log = logging.getLogger(__name__)


def build_scheduler(runtime: Runtime) -> AsyncIOScheduler:
    settings = runtime.settings
    scheduler = AsyncIOScheduler()

    async def sweep_tick() -> None:
        await sweep(
            runtime.sessions,
            runtime.clock.now(),
            runtime.policies.current,
            settings.sweep_batch_size,
            settings.late_after_seconds,
            settings.sweep_concurrency,
        )
        runtime.last_sweep_at = time.monotonic()
        metrics.SCHEDULER_HEARTBEAT.set(time.time())

    delivery_streaks: dict[str, FailureStreak] = {}

    async def dispatch_tick() -> None:
        await dispatch(
            runtime.sessions,
            runtime.http,
            runtime.clock,
            runtime.policies.current,
            runtime.retry,
            settings.dispatch_batch_size,
            settings.dispatch_concurrency,
            delivery_streaks,
        )

    async def gauges_tick() -> None:
        await refresh_gauges(runtime.reads, runtime.clock.now())

    async def volume_tick() -> None:
        await evaluate_volume(runtime.sessions, runtime.policies.current, runtime.clock.now())

    async def purge_tick() -> None:
        await purge_expired(
            runtime.sessions,
            runtime.clock.now(),
            settings.raw_retention_days,
            settings.outbox_retention_days,
        )

    jobs: list[tuple[Callable[[], Awaitable[None]], float]] = [
        (sweep_tick, settings.sweep_interval_seconds),
        (dispatch_tick, settings.dispatch_interval_seconds),
        (gauges_tick, settings.gauges_interval_seconds),
        (volume_tick, settings.volume_interval_seconds),
        (purge_tick, 3600.0),
    ]
    for job, seconds in jobs:
        scheduler.add_job(
            _logged(job),
            "interval",
            seconds=seconds,
            id=job.__name__,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
    return scheduler


def _logged(job: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """A failing tick is retried on the next tick; an outage is logged as one streak, in one
    line when the database is unavailable and with the traceback for any other error."""
    streak = FailureStreak(log, job.__name__)

    async def run() -> None:
        try:
            await job()
        except Exception as error:
            if database_unreachable(error):
                streak.failed(f"database unavailable: {describe_error(error)}")
            else:
                streak.failed(describe_error(error), traceback=True)
            return
        streak.succeeded()

    run.__name__ = job.__name__
    return run
