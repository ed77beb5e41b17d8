"""Database outages answer 503 with Retry-After, never a bare 500: senders retry later and
nothing is acknowledged that was not stored."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc

from service.db import describe_error

log = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = 5
DATABASE_ERRORS: tuple[type[Exception], ...] = (
    sa_exc.DBAPIError,
    sa_exc.TimeoutError,
    OSError,
    TimeoutError,
)


def database_unavailable() -> JSONResponse:
    return JSONResponse(
        {"error": "database unavailable, retry later"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def install(app: FastAPI) -> None:
    async def handler(_request: Request, error: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", describe_error(error))
        return database_unavailable()

    for error_type in DATABASE_ERRORS:
        app.add_exception_handler(error_type, handler)
