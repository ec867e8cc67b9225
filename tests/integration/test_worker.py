"""The stream worker against the real broker and Redis: events in, Feast features out."""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import redis
from confluent_kafka import Consumer, KafkaException
from confluent_kafka.admin import AdminClient
from feast import FeatureStore
from feast.data_source import PushMode

from streamrec.infra.feast_store import apply_definitions, feast_project, open_store
from streamrec.infra.kafka_retry import is_retriable
from streamrec.infra.notify import changed_users, item_changes_key, user_changed_channel
from streamrec.infra.seen import RedisSeenItems
from streamrec.settings import Settings
from streams.events import Click, Interaction, RecommendationServed, RecommendedItem, Topics
from streams.folding import ItemState, UserState, item_rows, user_rows
from streams.joins import ATTRIBUTION_WINDOW_MS, GRACE_MS
from streams.producer import EventProducer
from streams.sinks import ITEM_PUSH_SOURCE, USER_PUSH_SOURCE, FeastFeatureSink
from streams.topics import item_activity_topic
from tests.integration.test_backfill import online
from tests.support import streamrec_process, wait_until

T0 = 1_700_000_000_000


def _online_user(store: FeatureStore, user_id: str) -> dict[str, object]:
    result = store.get_online_features(
        features=["user_recent:recent_items", "user_recent:interaction_count"],
        entity_rows=[{"user_id": user_id}],
    ).to_dict()
    return {name: values[0] for name, values in result.items()}


def _online_item_count(store: FeatureStore, item_id: str) -> int | None:
    result = store.get_online_features(
        features=["item_stats:interaction_count"], entity_rows=[{"item_id": item_id}]
    ).to_dict()
    return result["interaction_count"][0]


def _read_all(settings: Settings, topic: str, expect: int, timeout: float = 20) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"{settings.topic_prefix}test-reader",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    values: list[bytes] = []

    def poll() -> bool:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            values.append(message.value() or b"")
        return len(values) >= expect

    try:
        wait_until(poll, timeout, f"{expect} records on {topic}", interval=0)
    finally:
        consumer.close()
    return values


def _assigned(settings: Settings, topic: str) -> list[int]:
    """The partitions of ``topic`` the worker's consumer group holds, as the broker says
    (none while the broker's group coordinator is not ready: a just-started broker answers
    NOT_COORDINATOR for a moment)."""
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    group = f"{settings.topic_prefix}worker"
    try:
        description = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
    except KafkaException as exc:
        if not is_retriable(exc):
            raise
        return []
    return sorted(
        tp.partition
        for member in description.members
        for tp in member.assignment.topic_partitions
        if tp.topic == topic
    )


def test_events_become_online_features_and_bad_records_are_dead_lettered(
    live_settings: Settings, tmp_path: Path
) -> None:
    settings = live_settings
    topics = Topics(settings.topic_prefix)
    notices = redis.Redis.from_url(settings.redis_connection_url or "").pubsub()
    notices.subscribe(user_changed_channel(settings.topic_prefix))
    log = tmp_path / "worker.log"
    store = open_store(settings)
    apply_definitions(store)
    with (
        streamrec_process(settings, "worker", log=log) as worker,
        EventProducer(settings.bootstrap_servers, topics) as producer,
    ):
        # The item side's topic, made by the worker as it starts, is in its assignment from
        # the first join on (a topic the broker did not list yet was left out for minutes).
        activity = item_activity_topic(settings.topic_prefix)
        wait_until(
            lambda: _assigned(settings, activity) == list(range(settings.topic_partitions)),
            60,
            f"every partition of {activity} assigned",
            proc=worker,
            log=log,
        )
        first = [
            producer.send(
                Interaction(
                    user_id=f"user{u}",
                    item_id=f"item{(u * 7 + i) % 13}",
                    action="view",
                    event_time=T0 + 1000 * i,
                )
            )
            for u in range(3)
            for i in range(60)
        ]
        producer.send_raw(topics.interactions, b"user0", b'{"schema": 1, "user_id": "user0"')
        producer.send_raw(topics.interactions, b"user1", b'{"schema": 9}')
        # Events after the bad records: the worker must keep folding.
        later = producer.send(
            Interaction(
                user_id="user0", item_id="late-item", action="purchase", event_time=T0 + 999_000
            )
        )
        producer.flush()
        for future in [*first, later]:
            future.result()

        def user0_folded() -> dict[str, object] | None:
            row = _online_user(store, "user0")
            return row if row["interaction_count"] == 61 else None

        row = wait_until(user0_folded, 90, "user0's 61 interactions online", proc=worker, log=log)
        recent = row["recent_items"]
        assert isinstance(recent, list) and len(recent) == settings.recent_items_max
        assert recent[0] == "late-item"  # newest first
        assert recent[1] == f"item{(0 * 7 + 59) % 13}"
        # other users sit on other partitions: each is complete in its own time
        for user in ("user1", "user2"):

            def folded(user: str = user) -> bool:
                return _online_user(store, user)["interaction_count"] == 60

            wait_until(folded, 30, f"{user}'s 60 interactions online")

        # item counts come through the re-keyed activity topic: 180 views over 13 items
        def item_counts() -> list[int] | None:
            counts = [_online_item_count(store, f"item{i}") or 0 for i in range(13)]
            return counts if sum(counts) == 180 else None

        counts = wait_until(item_counts, 60, "all item views counted", proc=worker, log=log)
        assert counts == [
            sum(1 for u in range(3) for i in range(60) if (u * 7 + i) % 13 == k) for k in range(13)
        ]
        # Every written item row is in the ledger the API's item refresh reads (api.state).
        ledger = redis.Redis.from_url(settings.redis_connection_url or "")
        written = {
            member.decode(): score
            for member, score in ledger.zrange(
                item_changes_key(settings.topic_prefix), 0, -1, withscores=True
            )
        }
        assert {f"item{i}" for i in range(13)} <= set(written)
        assert all(abs(score / 1000 - time.time()) < 600 for score in written.values())
        ledger.delete(item_changes_key(settings.topic_prefix))

        dead = [json.loads(v) for v in _read_all(settings, topics.dead_letters, expect=2)]
        reasons = sorted(d["reason"] for d in dead)
        assert reasons[0].startswith("not JSON")
        assert "unsupported schema version 9" in reasons[1]
        assert {base64.b64decode(d["value_b64"]) for d in dead} == {
            b'{"schema": 1, "user_id": "user0"',
            b'{"schema": 9}',
        }

        seen = set()
        for _ in range(200):
            message = notices.get_message(timeout=0.1)
            if message and message["type"] == "message":
                seen.update(changed_users(message["data"]))
            if {"user0", "user1", "user2"} <= seen:
                break
        assert {"user0", "user1", "user2"} <= seen
        assert worker.poll() is None, "the worker must still be running"
        # Feast imports torch as it is imported; the worker keeps it out (480 MiB resident)
        assert "libtorch" not in Path(f"/proc/{worker.pid}/maps").read_text()


def _online(store: FeatureStore, view: str, key: str, ids: list[str], names: list[str]) -> dict:
    result = store.get_online_features(
        features=[f"{view}:{name}" for name in names], entity_rows=[{key: i} for i in ids]
    ).to_dict()
    return {name: result[name] for name in [key, *names]}


def test_the_sink_writes_what_feast_push_writes(live_settings: Settings) -> None:
    """The worker's sink skips FeatureStore.push; the online rows must not change.

    Compared both as Feast reads them and byte for byte in Redis (keys, hash fields,
    protobuf values and timestamps), since the sink writes Feast's layout itself.
    """
    store = open_store(live_settings)
    apply_definitions(store)
    users = [
        (
            f"user{n}",
            UserState(
                items=[f"item{n}-{k}" for k in range(n)],
                times=[T0 - k for k in range(n)],
                interaction_count=n * 3,
                last_event_time=T0 + n,
                feature_time=T0 + n,
            ),
        )
        for n in range(5)
    ]
    items = [
        (
            f"item{n}",
            ItemState(
                interaction_count=n,
                click_count=n // 2,
                purchase_count=1,
                last_event_time=T0 - n,
                trend_score=0.25 * n,
                feature_time=T0 - n,
            ),
        )
        for n in range(5)
    ]
    user_ids, item_ids = [u for u, _ in users], [i for i, _ in items]
    user_names = ["recent_items", "recent_times", "interaction_count", "last_event_time"]
    item_names = ["interaction_count", "click_count", "purchase_count", "trend_score"]

    def push_with_feast(source: str, columns: dict[str, list[object]]) -> None:
        frame = pd.DataFrame(columns)
        frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], unit="ms", utc=True)
        store.push(source, frame, to=PushMode.ONLINE)

    push_with_feast(USER_PUSH_SOURCE, user_rows(users))
    push_with_feast(ITEM_PUSH_SOURCE, item_rows(items))
    by_feast = (
        _online(store, "user_recent", "user_id", user_ids, user_names),
        _online(store, "item_stats", "item_id", item_ids, item_names),
    )
    assert by_feast[0]["interaction_count"] == [0, 3, 6, 9, 12]
    # Wipe this test's keys, then write the same rows through the sink.
    client = redis.Redis.from_url(live_settings.redis_connection_url or "")
    keys = list(client.scan_iter(match=b"*" + feast_project(live_settings.topic_prefix).encode()))
    assert len(keys) == len(users) + len(items)
    stored_by_feast = {key: client.hgetall(key) for key in keys}
    client.delete(*keys)
    assert _online(store, "user_recent", "user_id", user_ids, ["interaction_count"])[
        "interaction_count"
    ] == [None] * len(users)

    sink = FeastFeatureSink(store)
    sink.push(USER_PUSH_SOURCE, user_rows(users))
    sink.push(ITEM_PUSH_SOURCE, item_rows(items))
    assert (
        _online(store, "user_recent", "user_id", user_ids, user_names),
        _online(store, "item_stats", "item_id", item_ids, item_names),
    ) == by_feast
    assert {key: client.hgetall(key) for key in keys} == stored_by_feast
    # Feast's keep-the-newer-row rule still applies: an older row, or one of the same
    # instant, changes nothing; a newer one replaces the row.
    for feature_time in (T0 - 10, T0 + 1):  # user1's row is at T0 + 1
        stale = UserState(interaction_count=99, last_event_time=T0 - 10, feature_time=feature_time)
        sink.push(USER_PUSH_SOURCE, user_rows([("user1", stale)]))
        assert _online(store, "user_recent", "user_id", ["user1"], ["interaction_count"])[
            "interaction_count"
        ] == [3]
    newer = UserState(interaction_count=7, last_event_time=T0 + 5, feature_time=T0 + 5)
    sink.push(USER_PUSH_SOURCE, user_rows([("user1", newer)]))
    assert _online(store, "user_recent", "user_id", ["user1"], ["interaction_count"])[
        "interaction_count"
    ] == [7]


def test_the_sink_rejects_rows_it_cannot_write(live_settings: Settings) -> None:
    store = open_store(live_settings)
    apply_definitions(store)
    sink = FeastFeatureSink(store)
    columns = user_rows([("user1", UserState(feature_time=T0))])
    with pytest.raises(ValueError, match="no feature view reads the push source 'nowhere'"):
        sink.push("nowhere", columns)
    del columns["interaction_count"]
    with pytest.raises(ValueError, match="no column 'interaction_count'"):
        sink.push(USER_PUSH_SOURCE, columns)


def _metric(port: int, name: str, label: str = "") -> float:
    """The sum of a metric's samples (whose line contains ``label``) on the worker's page."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
            body = page.read().decode()
    except OSError:  # the web server is not up yet
        return 0.0
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.startswith(name) and label in line and not line.startswith("#")
    )


def _served(request_id: str, items: list[str], at: int) -> RecommendationServed:
    return RecommendationServed(
        user_id="joiner",
        request_id=request_id,
        variant="v",
        model_version="m",
        event_time=at,
        items=tuple(
            RecommendedItem(item_id=item, rank=rank, score=1.0, reason="r")
            for rank, item in enumerate(items, start=1)
        ),
    )


def _click(request_id: str, item_id: str, at: int) -> Click:
    return Click(user_id="joiner", request_id=request_id, item_id=item_id, rank=1, event_time=at)


def test_impressions_join_their_clicks_and_the_hour_window_counts_by_event_time(
    live_settings: Settings, tmp_path: Path
) -> None:
    settings = live_settings
    topics = Topics(settings.topic_prefix)
    log = tmp_path / "worker.log"
    store = open_store(settings)
    apply_definitions(store)
    port = settings.worker_port
    names = [
        "impression_count",
        "attributed_click_count",
        "attributed_ctr",
        "click_count",
        "interactions_1h",
        "interactions_1h_end",
    ]
    minute = 60_000
    with (
        streamrec_process(settings, "worker", log=log) as worker,
        EventProducer(settings.bootstrap_servers, topics) as producer,
    ):
        # Clicks read before their impression: one on a served item, one on an item the
        # request did not serve, and one whose request is never served.
        for click in (
            _click("early", "a1", T0 + 2000),
            _click("early", "zz", T0 + 3000),
            _click("never", "a1", T0 + 4000),
        ):
            producer.send(click)
        producer.flush()
        wait_until(
            lambda: _metric(port, "streamrec_join_events_total", 'outcome="pending"') == 3,
            90,
            "three clicks pending",
            proc=worker,
            log=log,
        )
        producer.send(_served("early", ["a1", "a2"], T0 + 1000))
        # In order: a served request, a click on it, the same click again, a click after
        # the attribution window.
        producer.send(_served("inorder", ["a1", "b1"], T0 + 5000))
        producer.flush()
        wait_until(
            lambda: _metric(port, "streamrec_join_events_total", 'outcome="impressions"') == 2,
            60,
            "two requests served",
        )
        for click in (
            _click("inorder", "b1", T0 + 6000),
            _click("inorder", "b1", T0 + 7000),
            _click("inorder", "a1", T0 + 5000 + 61 * minute),
        ):
            producer.send(click)
        # A request served long after: the recommendations clock passes the pending
        # click of "never", which is given up.
        producer.send(_served("later", ["c1"], T0 + 20 * minute))
        # The hour window: c1's interactions at 0, 10, 50 and 70 minutes.
        for at in (0, 10, 50, 70):
            producer.send(
                Interaction(
                    user_id="joiner", item_id="c1", action="view", event_time=T0 + at * minute
                )
            )
        producer.flush()

        want = {
            "a1": (2, 1, 3),  # served twice; of 3 clicks one counts (others: late, never served)
            "a2": (1, 0, 0),
            "b1": (1, 1, 2),  # two clicks, one impression: attributed once
            "zz": (0, 0, 1),
            "c1": (1, 0, 0),
        }

        def joined() -> dict[str, dict[str, object]] | None:
            rows = online(store, "item_stats", "item_id", sorted(want), names)
            got = {
                i: (r["impression_count"], r["attributed_click_count"], r["click_count"])
                for i, r in rows.items()
            }
            last.update(got, c1_1h=rows["c1"]["interactions_1h"])
            return rows if got == want and rows["c1"]["interactions_1h"] == 2 else None

        last: dict[str, object] = {}

        try:
            rows = wait_until(joined, 90, "joined counts online", proc=worker, log=log)
        except AssertionError as exc:
            raise AssertionError(f"last online: {last}") from exc
        assert rows["a1"]["attributed_ctr"] == (1 + 1) / (2 + 20)
        assert rows["a2"]["attributed_ctr"] == 1 / 21
        # 70 minutes falls in the bucket [70, 75): the hour [15, 75) holds 50 and 70.
        assert rows["c1"]["interactions_1h_end"] == T0 - T0 % (5 * minute) + 75 * minute
        wait_until(
            lambda: _metric(port, "streamrec_join_expired_total", 'what="pending_click"') == 1,
            30,
            "the pending click of a request never served given up",
        )
        assert worker.poll() is None


def test_requests_nobody_clicks_on_are_forgotten_once_every_click_is_folded(
    live_settings: Settings, tmp_path: Path
) -> None:
    """No click on the partition at all: its clicks clock never moves, and the requests are
    forgotten by the served clock once the worker has seen the clicks topic's end."""
    settings = live_settings
    log = tmp_path / "worker.log"
    apply_definitions(open_store(settings))
    port = settings.worker_port
    past_window = T0 + ATTRIBUTION_WINDOW_MS + GRACE_MS + 60_000
    with (
        streamrec_process(settings, "worker", log=log) as worker,
        EventProducer(settings.bootstrap_servers, Topics(settings.topic_prefix)) as producer,
    ):
        for n in range(3):
            producer.send(_served(f"quiet{n}", ["q1", "q2"], T0 + n * 1000))
        producer.send(_served("recent", ["q1"], past_window))
        producer.flush()
        sent = [0]

        def forgotten() -> bool:
            # A partition's requests are swept when a batch of it is folded: keep serving.
            sent[0] += 1
            producer.send(_served(f"more{sent[0]}", ["q3"], past_window + sent[0]))
            producer.flush()
            return _metric(port, "streamrec_join_expired_total", 'what="request"') >= 3

        wait_until(forgotten, 90, "the three early requests forgotten", 1.0, proc=worker, log=log)
        assert _metric(port, "streamrec_join_expired_total", 'what="request"') == 3
        assert worker.poll() is None


def test_seen_sets_take_a_whole_batch_in_one_call(live_settings: Settings) -> None:
    """Many users and members at once (beyond Lua's unpack limit), empty ones skipped."""
    url = live_settings.redis_connection_url or ""
    seen = RedisSeenItems(url, live_settings.topic_prefix)
    many = [f"item{n}" for n in range(20_000)]
    seen.add({"reader": many, "light": ["item1"], "idle": []})
    seen.add({"light": ["item1", "item2"]})
    assert seen.read("reader") == frozenset(many)
    assert seen.read("light") == {"item1", "item2"}
    assert seen.read("idle") == frozenset()
