"""Contract suites for the API's ports: every adapter of a port must pass its suite.

Subclass a contract in a ``Test...`` class and override its fixtures (they raise here, so
forgetting one fails loudly). The in-memory adapters run these in
``test_adapter_contracts.py``; the real Feast/Kafka/Redis adapters run them in the
integration tests, e.g.::

    from tests.unit.api.contracts import ChangeFeedContract

    class TestRedisChangeFeed(ChangeFeedContract):
        @pytest.fixture
        async def feed(self, redis_url): ...
        @pytest.fixture
        def notify(self, redis_client, channel): ...

Ids are made unique per test, so a shared store or broker never leaks between tests.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import pytest

from api.ports import (
    ChangeFeed,
    EventSink,
    EventSinkError,
    FeatureReader,
    ItemStats,
    RecentItems,
)
from streams.events import Click, Event, Interaction, RecommendationServed, RecommendedItem

SeedFeatures = Callable[[dict[str, RecentItems], dict[str, ItemStats]], Awaitable[None]]
ReadBack = Callable[[list[str]], Awaitable[list[Event]]]
Notify = Callable[[str], Awaitable[None]]

# Longest wait for something that should happen; real backends answer well within it.
ARRIVAL_SECONDS = 5.0
# How long "nothing happens" is watched for.
QUIET_SECONDS = 0.3


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


class FeatureReaderContract:
    @pytest.fixture
    def reader(self) -> FeatureReader:
        raise NotImplementedError("override the `reader` fixture")

    @pytest.fixture
    def seed(self) -> SeedFeatures:
        """Writes user and item rows the way the stream worker would."""
        raise NotImplementedError("override the `seed` fixture")

    async def test_unknown_user_is_none(self, reader: FeatureReader) -> None:
        assert await reader.user_recent(unique("nobody")) is None

    async def test_user_recent_round_trip(self, reader: FeatureReader, seed: SeedFeatures) -> None:
        user = unique("user")
        # The store keeps the latest few items but counts every interaction.
        recent = RecentItems(
            items=("i3", "i2", "i1"),
            times=(3_000, 2_000, 1_000),
            interaction_count=7,
            last_event_time=3_000,
        )
        await seed({user: recent}, {})
        assert await reader.user_recent(user) == recent

    async def test_item_stats_leaves_out_unknown_items(
        self, reader: FeatureReader, seed: SeedFeatures
    ) -> None:
        known, other, unknown = unique("item"), unique("item"), unique("item")
        stats = ItemStats(
            interaction_count=7,
            click_count=2,
            purchase_count=1,
            last_event_time=5,
            trend_score=3.25,
            covisit_items=(other, "elsewhere"),
            covisit_weights=(2, 1),
            covisit_total=5,
        )
        await seed({}, {known: stats, other: ItemStats(interaction_count=1, last_event_time=1)})
        found = await reader.item_stats([known, unknown])
        assert found == {known: stats}

    async def test_item_stats_of_many_items(
        self, reader: FeatureReader, seed: SeedFeatures
    ) -> None:
        prefix = unique("many")
        items = {
            f"{prefix}-{n}": ItemStats(interaction_count=n + 1, last_event_time=n)
            for n in range(1_200)
        }
        await seed({}, items)
        assert await reader.item_stats(list(items)) == items

    async def test_item_stats_of_nothing(self, reader: FeatureReader) -> None:
        assert await reader.item_stats([]) == {}

    async def test_ping(self, reader: FeatureReader) -> None:
        await reader.ping()


def _sample_events() -> list[Event]:
    user = unique("user")
    return [
        Interaction(user_id=user, item_id="i1", action="rate", rating=4.5, source="live"),
        RecommendationServed(
            request_id=unique("req"),
            user_id=user,
            variant="default",
            model_version="contract",
            items=(RecommendedItem(item_id="i2", rank=1, score=0.5, reason="popular right now"),),
        ),
        Click(request_id=unique("req"), user_id=user, item_id="i2", rank=1),
    ]


class EventSinkContract:
    @pytest.fixture
    def sink(self) -> EventSink:
        raise NotImplementedError("override the `sink` fixture")

    @pytest.fixture
    def read_back(self) -> ReadBack:
        """Returns the written events with the given event ids (waiting for them if needed)."""
        raise NotImplementedError("override the `read_back` fixture")

    @pytest.fixture
    def failing_sink(self) -> EventSink:
        """The same adapter, unable to write (e.g. an unreachable broker)."""
        raise NotImplementedError("override the `failing_sink` fixture")

    async def test_published_events_are_written_unchanged(
        self, sink: EventSink, read_back: ReadBack
    ) -> None:
        events = _sample_events()
        for event in events:
            await sink.publish(event)
        written = await read_back([e.event_id for e in events])
        assert sorted(written, key=lambda e: e.event_id) == sorted(events, key=lambda e: e.event_id)

    async def test_failed_write_raises(self, failing_sink: EventSink) -> None:
        with pytest.raises(EventSinkError):
            await asyncio.wait_for(failing_sink.publish(_sample_events()[0]), 60)

    async def test_ping(self, sink: EventSink) -> None:
        await sink.ping()


class ChangeFeedContract:
    @pytest.fixture
    def feed(self) -> ChangeFeed:
        """A started feed, ready to deliver notices."""
        raise NotImplementedError("override the `feed` fixture")

    @pytest.fixture
    def notify(self) -> Notify:
        """Announces that a user's features changed, the way the stream worker does."""
        raise NotImplementedError("override the `notify` fixture")

    async def test_subscriber_hears_its_user(self, feed: ChangeFeed, notify: Notify) -> None:
        user = unique("user")
        async with feed.subscribe(user) as subscription:
            await notify(user)
            await asyncio.wait_for(subscription.changed(), ARRIVAL_SECONDS)

    async def test_subscriber_ignores_other_users(self, feed: ChangeFeed, notify: Notify) -> None:
        user, other = unique("user"), unique("other")
        async with feed.subscribe(user) as subscription:
            await notify(other)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(subscription.changed(), QUIET_SECONDS)
            # Still alive: its own user's notice gets through afterwards.
            await notify(user)
            await asyncio.wait_for(subscription.changed(), ARRIVAL_SECONDS)

    async def test_every_subscriber_of_a_user_hears(self, feed: ChangeFeed, notify: Notify) -> None:
        user = unique("user")
        async with feed.subscribe(user) as first, feed.subscribe(user) as second:
            await notify(user)
            await asyncio.wait_for(first.changed(), ARRIVAL_SECONDS)
            await asyncio.wait_for(second.changed(), ARRIVAL_SECONDS)

    async def test_leaving_unsubscribes(self, feed: ChangeFeed, notify: Notify) -> None:
        user = unique("user")
        before = feed.subscriber_count()
        async with feed.subscribe(user):
            assert feed.subscriber_count(user) == 1
            assert feed.subscriber_count() == before + 1
        assert feed.subscriber_count(user) == 0
        assert feed.subscriber_count() == before
        await notify(user)  # nobody listening: must not fail

    async def test_ping(self, feed: ChangeFeed) -> None:
        await feed.ping()
