"""Request dependencies: the runtime, a transaction-owning session, and API-key scopes."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from service.config import ApiScope
from service.runtime import Runtime

_bearer = HTTPBearer(auto_error=False)


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_session(runtime: Runtime = Depends(get_runtime)) -> AsyncIterator[AsyncSession]:
    """The request owns its transaction: commit on success, roll back on any error."""
    async with runtime.sessions() as session, session.begin():
        yield session


async def get_read_session(
    runtime: Runtime = Depends(get_runtime),
) -> AsyncIterator[AsyncSession]:
    """A transaction for a request that only reads (see ``db.read_session_factory``)."""
    async with runtime.reads() as session, session.begin():
        yield session


def require(scope: ApiScope) -> Callable[..., Coroutine[Any, Any, None]]:
    async def check(
        runtime: Runtime = Depends(get_runtime),
        credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
    ) -> None:
        keys = runtime.settings.parsed_api_keys()
        if not keys:
            return  # no keys: the server only binds to loopback (enforced by `serve`)
        if credentials is None:
            raise HTTPException(401, "missing bearer token", {"WWW-Authenticate": "Bearer"})
        presented = credentials.credentials.encode()
        for key in keys:
            if hmac.compare_digest(presented, key.key.encode()):
                if scope == "admin" and key.scope != "admin":
                    raise HTTPException(403, "this key has read scope; admin is needed")
                return
        raise HTTPException(401, "invalid bearer token", {"WWW-Authenticate": "Bearer"})

    return check
