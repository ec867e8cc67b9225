"""The fan-out behind every ChangeFeed: coalescing and waking everyone after a reconnect."""

from __future__ import annotations

import asyncio

import pytest

from api.adapters.fanout import UserChangeHub


async def test_notices_that_pile_up_wake_a_slow_client_once() -> None:
    hub = UserChangeHub()
    async with hub.subscribe("u") as subscription:
        for _ in range(3):
            hub.notify("u")
        await asyncio.wait_for(subscription.changed(), 1)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(subscription.changed(), 0.1)


async def test_notify_all_wakes_every_user() -> None:
    hub = UserChangeHub()
    async with hub.subscribe("u") as first, hub.subscribe("v") as second:
        hub.notify_all()
        await asyncio.wait_for(first.changed(), 1)
        await asyncio.wait_for(second.changed(), 1)


async def test_notify_reports_how_many_heard() -> None:
    hub = UserChangeHub()
    assert hub.notify("u") == 0
    async with hub.subscribe("u"), hub.subscribe("u"):
        assert hub.notify("u") == 2
    assert hub.notify("u") == 0
