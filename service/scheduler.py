"""APScheduler ticks. Timers live in the database; the scheduler only wakes the sweep, the
dispatcher and the snapshot refresh — a handful of in-memory jobs, never one job per lead."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from service import metrics
from service.db import database_unreachable, describe_error
from service.gauges import refresh_gauges
from service.notify.dispatcher import dispatch
from service.retention import purge_expired
from service.runtime import Runtime
from service.sweep import sweep
from service.volume_jobs import evaluate_volume

log = logging.getLogger(__name__)

STILL_FAILING_LOG_SECONDS = 60.0  # while a tick keeps failing, how often to say so


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

    async def dispatch_tick() -> None:
        await dispatch(
            runtime.sessions,
            runtime.http,
            runtime.clock,
            runtime.policies.current,
            runtime.retry,
            settings.dispatch_batch_size,
            settings.dispatch_concurrency,
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
    """A failing tick is retried on the next tick, and logged so that an outage reads as one
    story rather than a traceback a second: when it starts failing (one line if the database is
    unavailable, the traceback otherwise), at most once a minute while it goes on, and when it
    recovers."""
    name = job.__name__
    failures = 0
    failing_since = last_logged = 0.0

    async def run() -> None:
        nonlocal failures, failing_since, last_logged
        try:
            await job()
        except Exception as error:
            now = time.monotonic()
            failures += 1
            if failures == 1:
                failing_since = last_logged = now
                if database_unreachable(error):
                    log.warning(
                        "%s failed, database unavailable (%s); retrying on every tick",
                        name, describe_error(error),
                    )  # fmt: skip
                else:
                    log.exception("%s failed; retrying on every tick", name)
            elif now - last_logged >= STILL_FAILING_LOG_SECONDS:
                last_logged = now
                log.warning(
                    "%s still failing: %d ticks in a row over %.0f s (%s)",
                    name, failures, now - failing_since, describe_error(error),
                )  # fmt: skip
            return
        if failures:
            log.info(
                "%s recovered after %d failed ticks over %.0f s",
                name, failures, time.monotonic() - failing_since,
            )  # fmt: skip
            failures = 0

    run.__name__ = name
    return run
