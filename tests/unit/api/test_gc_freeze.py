"""`streamrec serve` leaves its start-up heap out of the collector's passes; a test's app
(the default) leaves the process's collector as it was."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from streamrec.infra.gc_tuning import GC_YOUNG_THRESHOLD
from streamrec.settings import Settings
from tests.unit.api.helpers import Adapters, running_app


@pytest.fixture
def collector_restored() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.parametrize("freeze", [True, False])
async def test_the_served_app_freezes_its_start_up_heap_once_started(
    settings: Settings, adapters: Adapters, collector_restored: None, freeze: bool
) -> None:
    gc.unfreeze()
    threshold = gc.get_threshold()
    async with running_app(settings, adapters, wait_for_index=False, freeze_heap=freeze):
        if freeze:
            assert gc.get_freeze_count() > 10_000  # the imports' objects
            assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *threshold[1:])
        else:
            assert gc.get_freeze_count() == 0
            assert gc.get_threshold() == threshold
