"""The API's real adapters run the port contracts against the running Redis and broker.

Rows are written the way the stream worker writes them (folding states, ``*_rows``,
``FeastFeatureSink``), notices are published with the worker's ``RedisChangeNotifier``,
and written events are read back from the topics, so each suite checks that the API and
the worker agree, not only that an adapter agrees with itself.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest
import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from feast import FeatureStore

from api.adapters.feast_features import FeastFeatureReader
from api.adapters.kafka_sink import KafkaEventSink, open_kafka_sink
from api.adapters.redis_changes import RedisChangeFeed, open_redis_change_feed
from api.adapters.redis_features import RedisFeatureReader
from api.ports import EventSinkError, ItemStats, PortUnavailable, RecentItems
from streamrec.infra.feast_store import apply_definitions, open_store
from streamrec.infra.notify import item_changes_key, user_changed_channel
from streamrec.settings import Settings
from streams.events import Event, Interaction, Topics, decode
from streams.folding import ItemState, UserState, item_rows, stamp, user_rows
from streams.sinks import ITEM_PUSH_SOURCE, USER_PUSH_SOURCE, FeastFeatureSink, RedisChangeNotifier
from tests.support import free_port, wait_until
from tests.unit.api.contracts import (
    ARRIVAL_SECONDS,
    ChangeFeedContract,
    EventSinkContract,
    FeatureReaderContract,
    Notify,
    ReadBack,
    SeedFeatures,
    unique,
)

pytestmark = pytest.mark.integration

# Nothing listens here: connections are refused at once.
UNREACHABLE_BROKER = "127.0.0.1:1"
# Short, so the failing-sink test ends quickly; the adapter's default (10s) suits requests.
FAILING_DELIVERY_SECONDS = 2.0
# Longest wait for written events to show up on the topics.
READ_BACK_SECONDS = 20.0
# The listener backs off for 1s before resubscribing; a reconnect finishes well within this.
RECONNECT_SECONDS = 10.0


def _redis_url(settings: Settings) -> str:
    url = settings.redis_connection_url
    assert url is not None, "the integration tests run against Redis"
    return url


# -- FeatureReader: Feast on the Redis online store ------------------------------------


@pytest.fixture
def redis_feast_store(live_settings: Settings) -> Iterator[FeatureStore]:
    """This test's Feast project on the running Redis; its online keys are removed after."""
    store = open_store(live_settings)
    assert store.config.online_store.type == "redis", "this suite is about the Redis store"
    apply_definitions(store)
    yield store
    store.teardown()
    project = store.config.project.encode()
    left = list(
        redis.Redis.from_url(_redis_url(live_settings)).scan_iter(match=b"*" + project, count=1000)
    )
    assert not left, f"{len(left)} online keys of project {project!r} left after teardown"


def _user_state(user_id: str, recent: RecentItems) -> UserState:
    """The state the worker would hold after folding the given items, newest first."""
    state = UserState(
        items=list(recent.items),
        times=list(recent.times),
        event_ids=[f"{user_id}-{n}" for n in range(len(recent.items))],
        interaction_count=recent.interaction_count or len(recent.items),
        last_event_time=recent.last_event_time or max(recent.times, default=0),
    )
    stamp(state)
    return state


def _item_state(item_id: str, stats: ItemStats) -> ItemState:
    # The worker folds only events, and every event has a time.
    assert stats.last_event_time is not None, f"{item_id}: the worker always has an event time"
    state = ItemState(
        interaction_count=stats.interaction_count,
        click_count=stats.click_count,
        purchase_count=stats.purchase_count,
        last_event_time=stats.last_event_time,
        trend_score=stats.trend_score,
        covisits=dict(zip(stats.covisit_items, stats.covisit_weights, strict=True)),
        covisit_total=stats.covisit_total,
    )
    stamp(state)
    return state


class TestFeastFeatureReaderOnRedis(FeatureReaderContract):
    @pytest.fixture
    def reader(self, redis_feast_store: FeatureStore) -> FeastFeatureReader:
        return FeastFeatureReader(redis_feast_store)

    @pytest.fixture
    def seed(self, redis_feast_store: FeatureStore) -> SeedFeatures:
        sink = FeastFeatureSink(redis_feast_store)

        def write(users: dict[str, RecentItems], items: dict[str, ItemStats]) -> None:
            # The worker pushes only what changed in a batch, and nothing for an empty one.
            if users:
                user_states = [(u, _user_state(u, recent)) for u, recent in users.items()]
                sink.push(USER_PUSH_SOURCE, user_rows(user_states))
            if items:
                item_states = [(i, _item_state(i, stats)) for i, stats in items.items()]
                sink.push(ITEM_PUSH_SOURCE, item_rows(item_states))

        async def seed(users: dict[str, RecentItems], items: dict[str, ItemStats]) -> None:
            await anyio.to_thread.run_sync(write, users, items)

        return seed


async def test_feast_reader_ping_fails_when_redis_is_unreachable(
    live_settings: Settings,
) -> None:
    # A port nobody listens on: the store cannot answer, and the port says so.
    dead = live_settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    reader = FeastFeatureReader(open_store(dead))
    with pytest.raises(PortUnavailable, match="online store read failed"):
        await reader.ping()


# -- EventSink: Kafka -------------------------------------------------------------------


def _read_topics(settings: Settings, event_ids: set[str], timeout: float) -> list[Event]:
    """Every record of the API's topics whose event id is wanted, read to the end.

    Reading to the end of every partition (not stopping at the last wanted id) means a
    record written twice shows up twice.
    """
    topics = Topics(settings.topic_prefix)
    names = [topics.interactions, topics.recommendations, topics.clicks]
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"{settings.topic_prefix}read-back-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        metadata = consumer.list_topics(timeout=10)
        partitions = [
            TopicPartition(name, partition, OFFSET_BEGINNING)
            for name in names
            for partition in metadata.topics[name].partitions
        ]
        consumer.assign(partitions)
        at_end: set[tuple[str, int | None]] = set()
        found: list[Event] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None:
                continue
            topic, error = message.topic() or "", message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    raise AssertionError(f"reading {topic}: {error.str()}")
                at_end.add((topic, message.partition()))
            else:
                at_end.discard((topic, message.partition()))
                event = decode(topics.event_type(topic), message.value())
                if event.event_id in event_ids:
                    found.append(event)
            seen = {event.event_id for event in found}
            if len(at_end) == len(partitions) and seen >= event_ids:
                break
        return found
    finally:
        consumer.close()


class TestKafkaEventSink(EventSinkContract):
    @pytest.fixture
    async def sink(self, live_settings: Settings) -> AsyncIterator[KafkaEventSink]:
        topics = Topics(live_settings.topic_prefix)
        async with open_kafka_sink(live_settings.bootstrap_servers, topics) as sink:
            yield sink

    @pytest.fixture
    def read_back(self, live_settings: Settings) -> ReadBack:
        async def read_back(event_ids: list[str]) -> list[Event]:
            return await anyio.to_thread.run_sync(
                _read_topics, live_settings, set(event_ids), READ_BACK_SECONDS
            )

        return read_back

    @pytest.fixture
    async def failing_sink(self, live_settings: Settings) -> AsyncIterator[KafkaEventSink]:
        async with open_kafka_sink(
            UNREACHABLE_BROKER,
            Topics(live_settings.topic_prefix),
            delivery_timeout_seconds=FAILING_DELIVERY_SECONDS,
        ) as sink:
            yield sink


async def test_kafka_sink_gives_up_within_its_delivery_timeout(live_settings: Settings) -> None:
    event = Interaction(user_id=unique("user"), item_id="i1", action="view", source="live")
    async with open_kafka_sink(
        UNREACHABLE_BROKER,
        Topics(live_settings.topic_prefix),
        delivery_timeout_seconds=FAILING_DELIVERY_SECONDS,
    ) as sink:
        started = time.monotonic()
        with pytest.raises(EventSinkError, match=event.event_id):
            await asyncio.wait_for(sink.publish(event), 30)
        waited = time.monotonic() - started
    # A request must not hang far past the timeout it was given.
    assert waited < FAILING_DELIVERY_SECONDS + 3, f"gave up after {waited:.1f}s"


async def test_kafka_sink_ping_fails_without_broker_or_topics(live_settings: Settings) -> None:
    async with open_kafka_sink(
        UNREACHABLE_BROKER, Topics(live_settings.topic_prefix), delivery_timeout_seconds=1.0
    ) as unreachable:
        with pytest.raises(PortUnavailable, match="unreachable"):
            await unreachable.ping()
    # The running broker, but a prefix whose topics were never created.
    other = Topics(f"{live_settings.topic_prefix}missing.")
    async with open_kafka_sink(live_settings.bootstrap_servers, other) as missing:
        with pytest.raises(PortUnavailable, match=f"topics missing: {other.interactions}"):
            await missing.ping()


# -- ChangeFeed: Redis pub/sub ----------------------------------------------------------


@pytest.fixture
def feed_name(live_settings: Settings) -> str:
    """The client name of this test's feed, so its connections can be found on the server."""
    return f"{live_settings.topic_prefix}api-feed"


@pytest.fixture
async def redis_feed(live_settings: Settings, feed_name: str) -> AsyncIterator[RedisChangeFeed]:
    # redis-py names every connection of a client from the URL's client_name.
    base = _redis_url(live_settings)
    url = f"{base}{'&' if '?' in base else '?'}client_name={feed_name}"
    channel = user_changed_channel(live_settings.topic_prefix)
    async with open_redis_change_feed(url, channel) as feed:
        await feed.wait_listening(ARRIVAL_SECONDS)
        yield feed


@pytest.fixture
def worker_notify(live_settings: Settings) -> Notify:
    notifier = RedisChangeNotifier(_redis_url(live_settings), live_settings.topic_prefix)

    async def notify(user_id: str) -> None:
        await anyio.to_thread.run_sync(notifier.users_changed, [user_id])

    return notify


class TestRedisChangeFeed(ChangeFeedContract):
    @pytest.fixture
    def feed(self, redis_feed: RedisChangeFeed) -> RedisChangeFeed:
        return redis_feed

    @pytest.fixture
    def notify(self, worker_notify: Notify) -> Notify:
        return worker_notify


def _pubsub_client_ids(client: redis.Redis, name: str) -> set[int]:
    return {
        int(entry["id"])
        for entry in client.client_list(_type="pubsub")  # type: ignore[union-attr]
        if entry.get("name") == name
    }


async def test_redis_feed_recovers_after_its_pubsub_connection_is_killed(
    live_settings: Settings, redis_feed: RedisChangeFeed, feed_name: str, worker_notify: Notify
) -> None:
    """The adapter says it resubscribes after a lost connection and then wakes every
    client, since notices published meanwhile are lost. Kill only this test's pub/sub
    connection (other suites share the server) and hold it to both promises."""
    admin = redis.Redis.from_url(_redis_url(live_settings))
    before = _pubsub_client_ids(admin, feed_name)
    assert len(before) == 1, f"expected one pub/sub connection named {feed_name}: {before}"
    user = unique("user")
    async with redis_feed.subscribe(user) as subscription:
        (killed,) = before
        # CLIENT KILL TYPE pubsub, narrowed to this feed's connection.
        assert admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub", "ID", killed) == 1

        def resubscribed() -> set[int]:
            return _pubsub_client_ids(admin, feed_name) - before

        await anyio.to_thread.run_sync(
            lambda: wait_until(resubscribed, RECONNECT_SECONDS, "a new pub/sub connection")
        )
        await redis_feed.wait_listening(RECONNECT_SECONDS)
        # Notices sent while the connection was down are gone: the client must re-read.
        await asyncio.wait_for(subscription.changed(), RECONNECT_SECONDS)
        # And the feed goes on delivering.
        await worker_notify(user)
        await asyncio.wait_for(subscription.changed(), ARRIVAL_SECONDS)
    await redis_feed.ping()


class TestRedisFeatureReader(TestFeastFeatureReaderOnRedis):
    """The API's per-request reader: Feast's rows read in one pipelined round trip."""

    @pytest.fixture
    async def reader(  # type: ignore[override]
        self, redis_feast_store: FeatureStore, live_settings: Settings
    ) -> AsyncIterator[RedisFeatureReader]:
        reader = RedisFeatureReader.over(
            FeastFeatureReader(redis_feast_store),
            _redis_url(live_settings),
            live_settings.topic_prefix,
        )
        yield reader
        await reader.close()


async def test_redis_reader_reads_the_seen_set_in_the_same_trip(
    redis_feast_store: FeatureStore, live_settings: Settings
) -> None:
    from streamrec.infra.seen import RedisSeenItems

    user = unique("user")
    recent = RecentItems(
        items=("i2", "i1"), times=(2_000, 1_000), interaction_count=2, last_event_time=2_000
    )
    sink = FeastFeatureSink(redis_feast_store)
    await anyio.to_thread.run_sync(
        lambda: sink.push(USER_PUSH_SOURCE, user_rows([(user, _user_state(user, recent))]))
    )
    seen = RedisSeenItems(_redis_url(live_settings), live_settings.topic_prefix)
    seen.add({user: ["i1", "i2", "old"]})
    reader = RedisFeatureReader.over(
        FeastFeatureReader(redis_feast_store), _redis_url(live_settings), live_settings.topic_prefix
    )
    try:
        got = await reader.user_recent(user)
        via_feast = await FeastFeatureReader(redis_feast_store, seen=seen).user_recent(user)
    finally:
        await reader.close()
    assert got is not None and got.seen == frozenset({"i1", "i2", "old"})
    assert got == via_feast


async def test_redis_reader_hands_back_an_unchanged_item_row_as_the_same_object(
    redis_feast_store: FeatureStore, live_settings: Settings
) -> None:
    """What lets the API's item refresh skip unchanged rows (``ItemFeatures.build``)."""
    sink = FeastFeatureSink(redis_feast_store)
    a, b = unique("item"), unique("item")

    def push(items: dict[str, ItemStats], impressions: int = 0) -> None:
        states = [(i, _item_state(i, s)) for i, s in items.items()]
        for _, state in states:
            state.impression_count = impressions  # a field the API does not read
            state.feature_time += impressions  # and a newer row, as the join writes it
        sink.push(ITEM_PUSH_SOURCE, item_rows(states))

    first = {
        a: ItemStats(interaction_count=1, last_event_time=1_000, trend_score=1.0),
        b: ItemStats(interaction_count=2, last_event_time=1_000, trend_score=2.0),
    }
    await anyio.to_thread.run_sync(push, first)
    reader = RedisFeatureReader.over(
        FeastFeatureReader(redis_feast_store), _redis_url(live_settings), live_settings.topic_prefix
    )
    try:
        before = await reader.item_stats([a, b])
        again = await reader.item_stats([a, b])
        changed = ItemStats(interaction_count=3, last_event_time=2_000, trend_score=2.5)
        await anyio.to_thread.run_sync(push, {b: changed})
        after = await reader.item_stats([a, b])
        # Served (an impression joined): a newer row whose read fields are the same.
        await anyio.to_thread.run_sync(lambda: push({a: first[a]}, impressions=5))
        served = await reader.item_stats([a])
    finally:
        await reader.close()
    assert before == first
    assert again[a] is before[a] and again[b] is before[b]
    assert after[a] is before[a]
    assert after[b] is not before[b] and after[b] == changed
    assert served[a] is before[a], "a row rewritten with the same read fields is unchanged"


async def test_the_workers_item_ledger_names_the_rows_written_since(
    redis_feast_store: FeatureStore, live_settings: Settings
) -> None:
    """What the API's item refresh reads between its full reads (``api.state``)."""
    url, prefix = _redis_url(live_settings), live_settings.topic_prefix
    notifier = RedisChangeNotifier(url, prefix)
    reader = RedisFeatureReader.over(FeastFeatureReader(redis_feast_store), url, prefix)
    a, b = unique("item"), unique("item")
    try:
        nothing = await reader.item_changes(None)
        await anyio.to_thread.run_sync(notifier.items_changed, [a])
        first = await reader.item_changes(None)
        await asyncio.sleep(0.01)
        await anyio.to_thread.run_sync(notifier.items_changed, [b, b])
        since_first = await reader.item_changes(first.latest_ms + 0.5)  # type: ignore[union-attr]
        both = await reader.item_changes(first.latest_ms)  # type: ignore[union-attr]
        await anyio.to_thread.run_sync(notifier.items_changed, [a])  # a written again
        again = await reader.item_changes(first.latest_ms + 0.5)  # type: ignore[union-attr]
    finally:
        await reader.close()
        redis.Redis.from_url(url).delete(item_changes_key(prefix))
    assert nothing is not None and nothing.item_ids == () and nothing.latest_ms == 0.0
    assert first is not None and first.item_ids == () and first.latest_ms > 0
    assert since_first is not None and since_first.item_ids == (b,)
    assert since_first.latest_ms > first.latest_ms
    assert both is not None and both.item_ids == (a, b)  # oldest write first
    assert again is not None and again.item_ids == (b, a)  # one entry per item, rescored
