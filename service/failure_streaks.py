"""Failures that repeat — every tick while the database is down, every delivery while a receiver
is — logged as one story: when they start, at most once a minute while they go on, and when they
end, instead of a line (or a traceback) per failure."""

from __future__ import annotations

import logging
import time

STILL_FAILING_LOG_SECONDS = 60.0


class FailureStreak:
    """The failures in a row of one thing (``what``: a tick, a channel's deliveries)."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self.log, self.what = logger, what
        self.failures = 0
        self.since = self.last_logged = 0.0

    def failed(self, detail: str, traceback: bool = False) -> None:
        """One more failure; ``traceback`` logs the exception being handled with the first."""
        now = time.monotonic()
        self.failures += 1
        if self.failures == 1:
            self.since = self.last_logged = now
            self.log.log(
                logging.ERROR if traceback else logging.WARNING,
                "%s failed (%s); retrying", self.what, detail, exc_info=traceback,
            )  # fmt: skip
        elif now - self.last_logged >= STILL_FAILING_LOG_SECONDS:
            self.last_logged = now
            self.log.warning(
                "%s still failing: %d in a row over %.0f s (%s)",
                self.what, self.failures, now - self.since, detail,
            )  # fmt: skip

    def succeeded(self) -> None:
        if self.failures:
            self.log.info(
                "%s recovered after %d failures over %.0f s",
                self.what, self.failures, time.monotonic() - self.since,
            )  # fmt: skip
            self.failures = 0
