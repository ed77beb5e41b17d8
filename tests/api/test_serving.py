"""What ``lead-sla serve`` asks of the app beyond what tests build: the garbage collector is
settled once start-up is done."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from service.app import create_app
from service.clock import FrozenClock
from service.config import Settings


@pytest.fixture
def collector() -> Iterator[None]:
    """The test process's collector as it was, whatever the app does to it."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


async def test_a_served_app_keeps_the_collector_off_what_start_up_built(
    settings: Settings, clock: FrozenClock, collector: None
) -> None:
    gc.unfreeze()
    served = create_app(settings, clock=clock, run_scheduler=False, serving=True)
    async with served.router.lifespan_context(served):
        assert gc.get_freeze_count() > 10_000  # modules, schemas, the policy set, the runtime
        assert gc.get_threshold()[0] == 10_000


async def test_an_app_built_for_tests_leaves_the_collector_alone(
    settings: Settings, clock: FrozenClock, collector: None
) -> None:
    gc.unfreeze()
    threshold = gc.get_threshold()
    app = create_app(settings, clock=clock, run_scheduler=False)
    async with app.router.lifespan_context(app):
        assert gc.get_freeze_count() == 0
        assert gc.get_threshold() == threshold
