"""SQLite mode runs one worker per database file.

SQLite has no ``SKIP LOCKED``: two sweepers on one file would serialise on the write lock at
best. A second worker therefore refuses to start. The lock is an OS file lock, so it is released
the moment the holder dies, even by SIGKILL, and a restarted worker takes it over.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO


class WorkerAlreadyRunning(RuntimeError):
    pass


class WorkerLock:
    def __init__(self, database: Path) -> None:
        self.database = database
        self.path = database.with_name(database.name + ".worker.lock")
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        handle = open(self.path, "a+")  # noqa: SIM115 - held for the life of the worker
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise WorkerAlreadyRunning(
                f"a lead-sla worker ({holder}) already runs on {self.database}; "
                "SQLite mode supports one worker (use PostgreSQL to run several)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None
