"""``/api/v1/policies``: what is loaded, reloading, recomputing open cycles, backtesting."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import AwareDatetime, BaseModel, Field

from service.api.deps import get_runtime, require
from service.backtest import backtest
from service.policies import load_text
from service.policy_file import PolicyFileError, summarize
from service.recompute import recompute_open_cycles
from service.runtime import Runtime

router = APIRouter(tags=["policies"])
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


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


def _refused(exc: PolicyFileError) -> HTTPException:
    return HTTPException(422, {"errors": [str(e) for e in exc.errors]})


@router.get("/policies", dependencies=[Depends(require("read"))])
async def get_policies(runtime: RuntimeDep) -> dict[str, Any]:
    return _describe(runtime)


@router.post("/policies/reload", dependencies=[Depends(require("admin"))])
async def reload_policies(runtime: RuntimeDep) -> dict[str, Any]:
    """Re-read the policy file. New cycles use it; open cycles keep the target they started
    with until recomputed. A file with errors is refused and the running version stays."""
    try:
        runtime.policies.reload()
    except PolicyFileError as exc:
        raise _refused(exc) from None
    return _describe(runtime)


@router.post("/policies/recompute", dependencies=[Depends(require("admin"))])
async def recompute(runtime: RuntimeDep) -> dict[str, Any]:
    """Re-derive every open cycle under the loaded version; reports how many changed."""
    result = await recompute_open_cycles(
        runtime.sessions, runtime.policies.current, runtime.clock.now()
    )
    return asdict(result)


class BacktestRequest(BaseModel):
    policies: str = Field(description="the candidate policy file, as YAML text")
    from_: AwareDatetime = Field(alias="from")
    to: AwareDatetime


@router.post("/policies/backtest", dependencies=[Depends(require("read"))])
async def run_backtest(request: BacktestRequest, runtime: RuntimeDep) -> dict[str, Any]:
    """Compliance, breaches and p50/p90 time to stop that the candidate policies would have had
    over stored history, beside the loaded ones. Writes nothing, sends nothing."""
    if request.from_ >= request.to:
        raise HTTPException(422, "from must be before to")
    try:
        candidate = load_text(request.policies, "candidate.yaml", runtime.settings.environment())
    except PolicyFileError as exc:
        raise _refused(exc) from None
    start: datetime = request.from_
    return await backtest(
        runtime.reads, runtime.policies.current, candidate, start, request.to,
        runtime.clock.now(),
    )  # fmt: skip
