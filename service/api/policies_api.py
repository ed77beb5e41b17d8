"""``/api/v1/policies``: what is loaded, and reloading it without a restart."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException

from service.api.deps import get_runtime, require
from service.policy_file import PolicyFileError, summarize
from service.runtime import Runtime

router = APIRouter(tags=["policies"])


def _describe(runtime: Runtime) -> dict[str, Any]:
    loaded = runtime.policies.current
    return {
        "version": loaded.version,
        "file": str(loaded.path),
        "policies": [
            {"id": p.id, "kind": p.kind, "summary": line}
            for p, line in zip(
                loaded.policy_set.policies, summarize(loaded.policy_set), strict=True
            )
        ],
    }


@router.get("/policies", dependencies=[Depends(require("read"))])
async def get_policies(runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    return _describe(runtime)


@router.post("/policies/reload", dependencies=[Depends(require("admin"))])
async def reload_policies(runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    """Re-read the policy file. New cycles use it; open cycles keep the target they started
    with. A file with errors is refused and the running version stays."""
    try:
        runtime.policies.reload()
    except PolicyFileError as exc:
        raise HTTPException(422, {"errors": [str(e) for e in exc.errors]}) from None
    return _describe(runtime)
