"""The ``crm`` fixture of the per-CRM end-to-end modules (see ``tests/e2e/test_crm_common.py``)."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from service.clock import FrozenClock
from tests.conftest import Receiver
from tests.e2e.test_crm_common import CrmSource


@pytest.fixture
def crm(
    request: pytest.FixtureRequest,
    app: FastAPI,
    client: httpx.AsyncClient,
    clock: FrozenClock,
    receiver: Receiver,
) -> CrmSource:
    """The service as the requesting module's CRM source (the module's ``SOURCE``) sees it."""
    return CrmSource(request.module.SOURCE, client, app.state.runtime, clock, receiver)
