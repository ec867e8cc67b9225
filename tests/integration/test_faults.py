"""Faults against real services: a private broker and Redis of this module (started on
free ports with their own state directory), so killing and restarting them disturbs no
other test.

- the worker killed with SIGKILL mid-fold, twice, and restarted: every feature equals
  the fold of the log (no event lost, none counted twice);
- the broker stopped and restarted mid-replay: the replayer and the API's producer
  retry, and every accepted event is in the log exactly once;
- malformed, oversized and wrong-version records are dead-lettered with a reason, the
  worker keeps folding, and its counters move.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from api.adapters.kafka_sink import open_kafka_sink
from api.ports import EventSinkError
from streamrec.infra.feast_store import apply_definitions, open_store
from streamrec.infra.processes import run_streamrec, streamrec_process
from streamrec.infra.services import LocalServices, RedisServer
from streamrec.settings import Settings
from streams.backfill import fold_log, read_log
from streams.events import MAX_RECORD_BYTES, Click, Interaction, Topics
from streams.producer import EventProducer
from tests.integration.test_backfill import (
    ITEM_FEATURES,
    USER_FEATURES,
    assert_same_features,
    logged_events,
    online,
    produce_log,
)
from tests.support import (
    event_ids,
    isolated_settings,
    log_end,
    paced_speed,
    private_settings,
    running_services,
    wait_committed,
    wait_until,
)

# The broker restart strikes half a second into the replay: paced to last this long.
REPLAY_SECONDS = 20


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServices]:
    """A broker and a Redis of this module alone."""
    with running_services(private_settings(tmp_path_factory.mktemp("faults"))) as services:
        yield services


@pytest.fixture
def settings(private: LocalServices, tmp_path: Path) -> Settings:
    """This test's topics and folders on the private services."""
    base = private.settings
    fresh = isolated_settings(
        tmp_path,
        kafka_port=base.kafka_port,
        kafka_controller_port=base.kafka_controller_port,
        redis_port=base.redis_port,
        kafka_bootstrap="",
        redis_url="",
    )
    from streams.topics import ensure_topics

    ensure_topics(fresh.bootstrap_servers, Topics(fresh.topic_prefix), fresh.topic_partitions)
    return fresh


def _kill(proc: Any) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _metric(port: int, name: str, label: str = "") -> float:
    """The sum of a metric's samples (those holding ``label``) on a worker's /metrics page.

    0 while the page does not answer. ``name`` is the sample's full name, such as
    ``..._total``: a prefix would also sum the ``_created`` timestamps.
    """
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
            body = page.read().decode()
    except OSError:  # URLError included: the web server is not up yet
        return 0.0
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.partition("{")[0].partition(" ")[0] == name and label in line
    )


class _SavedAhead:
    """Whether a worker's saved user state is ahead of its committed interactions.

    It follows the user table's changelog (what a restarted worker recovers) for the
    offsets the states written since ``forget`` have folded. A worker killed while that
    is true leaves events that its restart meets again: redelivered, already in the
    recovered state. Quick to ask, so a probe can catch the moment between a batch's
    table write and its commit.
    """

    def __init__(self, settings: Settings, topics: Topics) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self._topic = topics.interactions
        self._partitions = [
            TopicPartition(self._topic, p) for p in range(settings.topic_partitions)
        ]
        changelog = f"{topics.prefix}worker-user_recent-changelog"
        servers = settings.bootstrap_servers
        self._changelog = Consumer({"bootstrap.servers": servers, "group.id": f"watch.{changelog}"})
        self._changelog.assign(
            [
                TopicPartition(changelog, p, OFFSET_BEGINNING)
                for p in range(settings.topic_partitions)
            ]
        )
        # asks for the worker group's committed offsets; never joins it or commits
        self._offsets = Consumer(
            {
                "bootstrap.servers": servers,
                "group.id": f"{settings.topic_prefix}worker",
                "enable.auto.commit": False,
            }
        )
        self._folded: dict[int, int] = {}
        self._committed = 0

    def forget(self) -> None:
        """From now on, only states written after this call count."""
        self._read_changelog()
        self._folded.clear()

    def __call__(self) -> tuple[bool, int]:
        """(ahead, committed): whether it is ahead, and the committed offsets' sum."""
        from confluent_kafka import KafkaException

        self._read_changelog()
        try:
            offsets = self._offsets.committed(self._partitions, timeout=10)
        except KafkaException:  # the group's coordinator is not ready (yet): ask again later
            return False, self._committed
        committed = {tp.partition: max(tp.offset, 0) for tp in offsets}  # next offset to read
        self._committed = sum(committed.values())
        ahead = any(offset >= committed.get(p, 0) for p, offset in self._folded.items())
        return ahead, self._committed

    def _read_changelog(self) -> None:
        while messages := self._changelog.consume(500, timeout=0.005):
            for message in messages:
                value = message.value()
                if message.error() or value is None:
                    continue  # the topic may not exist yet
                for source, offset in json.loads(value)["offsets"].items():
                    topic, _, partition = source.rpartition(":")
                    if topic == self._topic:
                        p = int(partition)
                        self._folded[p] = max(self._folded.get(p, -1), offset)

    def close(self) -> None:
        self._changelog.close()
        self._offsets.close()


@pytest.mark.timeout(600)
def test_worker_killed_mid_fold_loses_and_doubles_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    topics = Topics(settings.topic_prefix)
    sent = produce_log(settings, users=200, items=300, events=10_000, seed=23)
    interactions = [e for e in sent if isinstance(e, Interaction)]
    store = open_store(settings)
    apply_definitions(store)
    log = tmp_path / "worker.log"
    # Small batches: more commits, so each kill lands between some of them.
    settings = settings.model_copy(update={"worker_batch_size": 250})

    # Each worker is killed once its saved state is ahead of its commit, at least 20% of
    # the way further; kept: whether that still held once it was dead, and what it had met
    # again by then (the second one meets what the first folded but never committed).
    landed: list[bool] = []
    redelivered: list[float] = []
    on_interactions = f'topic="{topics.interactions}"'
    ahead = _SavedAhead(settings, topics)
    try:
        for stop_at in (0.2, 0.55):
            ahead.forget()
            goal = max(stop_at, ahead()[1] / len(interactions) + 0.2) * len(interactions)
            with streamrec_process(settings, "worker", log=log) as worker:
                counts: dict[str, float] = {}

                def mid_fold(goal: float = goal, counts: dict[str, float] = counts) -> bool:
                    counts["redelivered"] = _metric(
                        settings.worker_port, "streamrec_worker_redelivered_total", on_interactions
                    )
                    is_ahead, committed = ahead()
                    return is_ahead and committed >= goal

                wait_until(mid_fold, 120, f"{stop_at:.0%} folded", 0.01, proc=worker, log=log)
                _kill(worker)
                redelivered.append(counts["redelivered"])
                landed.append(ahead()[0])
    finally:
        ahead.close()
    assert any(landed), "both kills came after a commit: nothing was left to fold again"
    users, items, report = fold_log(settings)
    assert report.interactions == len(interactions)
    want_users = {
        u: {
            "recent_items": s.items,
            "recent_times": s.times,
            "interaction_count": s.interaction_count,
            "last_event_time": s.last_event_time,
        }
        for u, s in users.items()
    }
    want_items = {i: {name: getattr(s, name) for name in ITEM_FEATURES} for i, s in items.items()}
    # and, independently of the folding code, the counts from what was sent
    assert {u: w["interaction_count"] for u, w in want_users.items()} == Counter(
        e.user_id for e in interactions
    )
    assert {i: w["click_count"] for i, w in want_items.items() if w["click_count"]} == Counter(
        e.item_id for e in sent if isinstance(e, Click)
    )

    with streamrec_process(settings, "worker", log=log) as worker:
        user_ids, item_ids = sorted(want_users), sorted(want_items)
        # The killed worker may have pushed features past its last commit, so the store can
        # look complete before this one starts: wait until it has committed everything, so
        # the comparison below also covers what it folded again.
        wait_committed(settings, "the restarted worker to commit everything", 180, worker, log)

        wrong: list[str] = []

        def settled() -> bool:
            got = online(store, "item_stats", "item_id", item_ids, ["interaction_count"])
            wrong[:] = [
                f"{i}: {got[i]['interaction_count']} != {w['interaction_count']}"
                for i, w in want_items.items()
                if got[i]["interaction_count"] != w["interaction_count"]
            ]
            return not wrong

        try:
            wait_until(settled, 180, "item counts after the restarts", proc=worker, log=log)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{len(wrong)} items wrong: {wrong[:10]}") from None
        assert_same_features(
            online(store, "user_recent", "user_id", user_ids, USER_FEATURES), want_users
        )
        assert_same_features(
            online(store, "item_stats", "item_id", item_ids, ITEM_FEATURES), want_items
        )
        # a kill that left folded events uncommitted: the next worker met them again
        final = 0.0
        if landed[-1]:
            final = wait_until(
                lambda: _metric(
                    settings.worker_port, "streamrec_worker_redelivered_total", on_interactions
                ),
                30,
                "the last worker to count redelivered records",
                proc=worker,
                log=log,
            )
        met_again = [*redelivered[1:], final]
        for kill, was_ahead in enumerate(landed, start=1):
            assert met_again[kill - 1] > 0 or not was_ahead, f"kill {kill}: nothing met again"


@pytest.mark.timeout(600)
def test_broker_restart_mid_replay_keeps_every_event_exactly_once(
    private: LocalServices, settings: Settings, tmp_path: Path
) -> None:
    topics = Topics(settings.topic_prefix)
    run_streamrec(settings, "data", "prepare", "synthetic:users=400,items=300,events=60000,seed=9")
    expected = pq.read_table(
        settings.data_dir / "datasets" / "synthetic" / "events.parquet", columns=["event_id"]
    )["event_id"].to_pylist()

    accepted: list[str] = []
    refused: list[str] = []
    stop = threading.Event()

    def api_writes() -> None:
        async def loop() -> None:
            async with open_kafka_sink(
                settings.bootstrap_servers, topics, delivery_timeout_seconds=30
            ) as sink:
                n = 0
                while not stop.is_set():
                    event = Interaction(user_id=f"api{n % 17}", item_id=f"x{n}", action="view")
                    try:
                        await sink.publish(event)
                        accepted.append(event.event_id)
                    except EventSinkError:
                        refused.append(event.event_id)
                    n += 1
                    await asyncio.sleep(0.01)

        asyncio.run(loop())

    writer = threading.Thread(target=api_writes)
    replay_log = tmp_path / "replay.dataset"
    try:
        speed = paced_speed(settings, "synthetic", REPLAY_SECONDS)
        with streamrec_process(
            settings, "replay", "synthetic", "--speed", speed, log=replay_log
        ) as replay:
            broker = private.kafka

            def replaying() -> bool:
                return log_end(settings, topics.interactions) > 0 or replay.poll() is not None

            wait_until(replaying, 120, "the replay to start writing", interval=0.05)
            writer.start()  # after the replay's first records: it counts the log end above
            time.sleep(0.5)
            assert replay.poll() is None, "the replay ended before the broker stopped"
            assert broker.proc.stop(), "the broker was not running"
            time.sleep(5.0)
            broker.up()
            assert replay.wait(300) == 0, replay_log.read_text()[-3000:]
    finally:
        stop.set()
        if writer.is_alive():
            writer.join(120)
    replayed = event_ids(settings, topics.interactions)
    live = {i for i in replayed if i in set(accepted) | set(refused)}
    replay_ids = Counter({i: n for i, n in replayed.items() if i not in live})
    assert sorted(replay_ids) == sorted(expected)
    assert set(replay_ids.values()) == {1}, "a replayed event was written twice"
    assert accepted, "the API wrote nothing"
    assert all(replayed[i] == 1 for i in accepted), "an accepted API event is missing or doubled"
    assert all(replayed[i] <= 1 for i in refused)


POISON_CLICK = (
    b'{"schema": 1, "event_id": "p", "event_time": 1700000000000, "user_id": "u", '
    b'"request_id": "r", "item_id": "i", "rank": 2147483648}'
)


def test_bad_records_are_dead_lettered_and_the_worker_keeps_going(
    settings: Settings, tmp_path: Path
) -> None:
    topics = Topics(settings.topic_prefix)
    store = open_store(settings)
    apply_definitions(store)
    log = tmp_path / "worker.log"
    bad = {
        b"{not json": "not JSON",
        json.dumps({"schema": 2, "user_id": "u"}).encode(): "unsupported schema version 2",
        b'{"schema": 1, "user_id": "u", "pad": "' + b"x" * MAX_RECORD_BYTES + b'"}': "exceeds",
        json.dumps({"schema": 1, "user_id": "u", "item_id": "i"}).encode(): "invalid Interaction",
    }
    with (
        streamrec_process(settings, "worker", log=log) as worker,
        EventProducer(settings.bootstrap_servers, topics) as producer,
    ):
        for value in bad:
            producer.send_raw(topics.interactions, b"u", value)
        producer.send_raw(topics.clicks, b"u", b"[1, 2]")
        producer.send_raw(topics.clicks, b"u", POISON_CLICK)  # issue 19: rank past int32
        after = Interaction(user_id="u", item_id="good", action="view")
        producer.send(after)
        producer.flush()

        def folded() -> bool:
            got = online(store, "user_recent", "user_id", ["u"], ["interaction_count"])
            return got["u"]["interaction_count"] == 1

        wait_until(folded, 90, "the good event after the bad ones", proc=worker, log=log)
        dead: list[dict[str, Any]] = []
        for batch in read_log(settings.bootstrap_servers, [topics.dead_letters]):
            dead.extend(json.loads(value or b"{}") for *_, value in batch)
        reasons = sorted(d["reason"] for d in dead)
        assert len(dead) == len(bad) + 2
        assert {d["consumer"] for d in dead} == {"worker"}
        for expected in [*bad.values(), "not a JSON object", "rank"]:
            assert any(expected in reason for reason in reasons), (expected, reasons)
        assert _metric(settings.worker_port, "streamrec_worker_dead_letters_total") == len(bad) + 2
        assert worker.poll() is None


def _kill_redis(redis: RedisServer) -> None:
    """``kill -9`` the Redis server: no shutdown, no last AOF flush."""
    pid = redis.proc.pid()
    assert pid is not None, "Redis was not running"
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: redis.proc.pid() is None, 10, "Redis to die")
    # A child Redis forked for an AOF rewrite may hold the port a moment longer.
    wait_until(lambda: not _answers(redis.port), 15, "Redis's port to close")


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.timeout(300)
async def test_redis_killed_comes_back_with_its_features(
    private: LocalServices, settings: Settings
) -> None:
    """Persistence is on: a Redis killed with SIGKILL a second after the last write
    (appendfsync everysec) restarts from its AOF with every feature, no backfill needed."""
    logged = logged_events(settings, users=15, items=20, events=600, seed=6)
    store, user_ids, item_ids = logged.store, logged.user_ids, logged.item_ids
    await asyncio.to_thread(run_streamrec, settings, "backfill", "--from-beginning")
    before_users = online(store, "user_recent", "user_id", user_ids, USER_FEATURES)
    before_items = online(store, "item_stats", "item_id", item_ids, ITEM_FEATURES)
    assert all(row["interaction_count"] for row in before_users.values())
    await asyncio.sleep(1.5)  # past one appendfsync period
    _kill_redis(private.redis)
    private.redis.up()
    assert_same_features(
        online(store, "user_recent", "user_id", user_ids, USER_FEATURES), before_users
    )
    assert_same_features(
        online(store, "item_stats", "item_id", item_ids, ITEM_FEATURES), before_items
    )


@pytest.mark.timeout(300)
@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
async def test_redis_restarted_empty_is_not_ready_until_backfill(
    private: LocalServices, settings: Settings, stop: str
) -> None:
    """Redis comes back empty (stopped, or killed with SIGKILL, and its files lost):
    /recommend still answers, /readyz names the features as not ready, and
    `streamrec backfill --from-beginning` brings back features and readiness."""
    import httpx

    from api.main import create_app

    logged = logged_events(settings, users=15, items=20, events=600, seed=5)
    interactions, store = logged.interactions, logged.store
    user_ids, item_ids = logged.user_ids, logged.item_ids
    await asyncio.to_thread(run_streamrec, settings, "backfill", "--from-beginning")
    before_users = online(store, "user_recent", "user_id", user_ids, USER_FEATURES)
    before_items = online(store, "item_stats", "item_id", item_ids, ITEM_FEATURES)
    assert {u: r["interaction_count"] for u, r in before_users.items()} == Counter(
        e.user_id for e in interactions
    )

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            ready = (await client.get("/readyz")).json()
            assert ready["checks"]["features"]["ok"], ready
            assert "backfill" in ready["checks"]["features"]["detail"]

            # Restart the private Redis with its data files removed: it comes back empty.
            if stop == "sigkill":
                _kill_redis(private.redis)
            else:
                private.redis.proc.stop()
            for data in private.redis.proc.dir.glob("appendonly*"):
                if data.is_dir():
                    for part in data.iterdir():
                        part.unlink()
                    data.rmdir()
                else:
                    data.unlink()
            private.redis.up()
            wiped = online(store, "user_recent", "user_id", user_ids, ["interaction_count"])
            assert all(row["interaction_count"] is None for row in wiped.values())

            response = await client.get("/readyz")
            assert response.status_code == 503
            body = response.json()
            assert "features" in body["failed"]
            assert "wiped" in body["checks"]["features"]["detail"]
            recommend = await client.get("/recommend", params={"user_id": user_ids[0]})
            assert recommend.status_code == 200, recommend.text
            assert recommend.json()["model_version"]

            await asyncio.to_thread(run_streamrec, settings, "backfill", "--from-beginning")
            assert_same_features(
                online(store, "user_recent", "user_id", user_ids, USER_FEATURES), before_users
            )
            assert_same_features(
                online(store, "item_stats", "item_id", item_ids, ITEM_FEATURES), before_items
            )
            deadline = time.monotonic() + 30
            while True:
                response = await client.get("/readyz")
                if response.status_code == 200 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            assert response.status_code == 200, response.json()
            assert response.json()["checks"]["features"]["ok"]
