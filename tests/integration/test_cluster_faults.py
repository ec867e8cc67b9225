"""A partition leader of a three-node cluster killed with SIGKILL mid-replay.

A private cluster of this module (`LocalServices` with three KRaft nodes, as
`streamrec services up --brokers 3` starts it, on free ports with its own state directory)
and a private Redis. While a replay of 100,000 events runs at full speed, with the worker
folding and the API answering, the node leading a partition of the interactions topic is
killed with SIGKILL, left dead a few seconds, and restarted. Then:

- every replayed event is in the log exactly once, and so is every event the API accepted;
- the worker's online features equal the fold of the log (a clean run's result);
- the API never answered 5xx for longer than its delivery timeout.
"""

from __future__ import annotations

import inspect
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from api.adapters.kafka_sink import open_kafka_sink
from streamrec.infra.cluster import KafkaCluster
from streamrec.infra.feast_store import apply_definitions, open_store
from streamrec.infra.processes import run_streamrec, streamrec_process
from streamrec.infra.services import LocalServices, _port_open
from streamrec.paths import dataset_events
from streams.backfill import fold_log
from streams.events import Topics
from tests.integration.test_backfill import (
    ITEM_FEATURES,
    USER_FEATURES,
    assert_same_features,
    online,
)
from tests.support import (
    create_own_topics,
    event_ids,
    isolated_settings,
    log_end,
    paced_speed,
    private_settings,
    running_services,
    wait_committed,
    wait_until,
)

pytestmark = pytest.mark.cluster

EVENTS = 100_000
# The leader dies once a fifth is in the log and stays down 5 s: paced to last this long.
REPLAY_SECONDS = 40
# What POST /events waits for the log before it answers 503 (api/main.py keeps the default).
DELIVERY_TIMEOUT = inspect.signature(open_kafka_sink).parameters["delivery_timeout_seconds"].default


def _free_ports(count: int) -> int:
    """A first port such that it and the ``count - 1`` after it are free now.

    Below Linux's ephemeral range (32768 on), where ``free_port`` and every outgoing
    connection draw theirs: a JVM takes seconds to bind, and one of those could take a
    port in between.
    """
    for _ in range(100):
        first = random.randrange(20_000, 32_000 - count)
        if not any(_port_open(p) for p in range(first, first + count)):
            return first
    raise RuntimeError(f"no {count} free consecutive ports")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServices]:
    root = tmp_path_factory.mktemp("cluster")
    first = _free_ports(6)  # node i: client port first + 2i, controller port first + 2i + 1
    settings = private_settings(
        root,
        kafka_brokers=3,
        kafka_port=first,
        kafka_controller_port=first + 1,
        kafka_heap="256m",
    )
    with running_services(settings) as services:
        yield services


@dataclass
class _Prober:
    """Asks the API for lists and posts events, every 50 ms, until stopped; keeps each
    answer's time and status (0: no answer at all)."""

    base: str
    answers: list[tuple[float, str, int]] = field(default_factory=list)
    slowest: float = 0.0
    accepted: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=DELIVERY_TIMEOUT + 20) as http:
            n = 0
            while not self.stop.is_set():
                user = f"probe{n % 23}"
                self._ask(http, "recommend", "GET", "/recommend", params={"user_id": user})
                event = {"user_id": user, "item_id": f"i{n % 50}", "action": "view"}
                response = self._ask(http, "events", "POST", "/events", json=event)
                if response is not None and response.status_code == 202:
                    self.accepted.append(response.json()["event_id"])
                n += 1
                time.sleep(0.05)

    def _ask(
        self, http: httpx.Client, route: str, method: str, url: str, **kwargs: Any
    ) -> httpx.Response | None:
        started = time.monotonic()
        try:
            response = http.request(method, url, **kwargs)
        except httpx.HTTPError:
            self.answers.append((time.monotonic(), route, 0))
            return None
        self.answers.append((time.monotonic(), route, response.status_code))
        self.slowest = max(self.slowest, time.monotonic() - started)
        return response

    def longest_failure(self) -> float:
        """The longest time between the first and the last of consecutive failed answers
        (5xx or none) of one route."""
        longest = 0.0
        for route in ("recommend", "events"):
            since: float | None = None
            for at, name, status in self.answers:
                if name != route:
                    continue
                if status >= 500 or status == 0:
                    since = at if since is None else since
                    longest = max(longest, at - since)
                else:
                    since = None
        return longest


@pytest.mark.timeout(900)
def test_leader_killed_mid_replay_loses_doubles_and_breaks_nothing(
    cluster: LocalServices, tmp_path: Path
) -> None:
    base = cluster.settings
    settings = isolated_settings(
        tmp_path,
        kafka_brokers=3,
        kafka_port=base.kafka_port,
        kafka_controller_port=base.kafka_controller_port,
        redis_port=base.redis_port,
        kafka_bootstrap="",
        redis_url="",
    )
    assert isinstance(cluster.kafka, KafkaCluster)
    kafka = cluster.kafka
    topics = Topics(settings.topic_prefix)
    create_own_topics(settings)
    wait_until(lambda: kafka.in_sync(topics.interactions), 60, "the new topic's replicas in sync")
    run_streamrec(
        settings, "data", "prepare", f"synthetic:users=3000,items=1500,events={EVENTS},seed=19"
    )
    expected = pq.read_table(dataset_events(settings.data_dir, "synthetic"), columns=["event_id"])[
        "event_id"
    ].to_pylist()
    assert len(expected) >= EVENTS
    store = open_store(settings)
    apply_definitions(store)

    logs = {name: tmp_path / f"{name}.log" for name in ("worker", "api", "replay")}
    prober = _Prober(f"http://127.0.0.1:{settings.api_port}")
    probing = threading.Thread(target=prober.run)
    with (
        streamrec_process(settings, "worker", log=logs["worker"]) as worker,
        streamrec_process(settings, "serve", log=logs["api"]) as api,
    ):

        def answers() -> bool:
            try:
                return httpx.get(f"{prober.base}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(answers, 120, "the API to answer", proc=api, log=logs["api"])
        probing.start()
        try:
            speed = paced_speed(settings, "synthetic", REPLAY_SECONDS)
            with streamrec_process(
                settings, "replay", "synthetic", "--speed", speed, log=logs["replay"]
            ) as replay:
                wait_until(
                    lambda: log_end(settings, topics.interactions) > EVENTS // 5,
                    180,
                    "a fifth of the replay in the log",
                    interval=0.1,
                    proc=replay,
                    log=logs["replay"],
                )
                victim = kafka.node(kafka.leader(topics.interactions, 0))
                killed_at = log_end(settings, topics.interactions)
                victim.kill()
                # Past the broker session timeout (4 s) the controller moves leadership; on
                # a loaded machine it takes longer, so wait for it rather than sleep a fixed time.
                wait_until(
                    lambda: kafka.leader(topics.interactions, 0) not in (victim.node_id, -1),
                    30,
                    "leadership of partition 0 to move off the killed node",
                    interval=0.25,
                )
                assert replay.poll() is None, "the replay ended before the node came back"
                victim.up()
                assert replay.wait(600) == 0, logs["replay"].read_text()[-3000:]
            wait_until(
                lambda: kafka.in_sync(topics.interactions),
                120,
                "the restarted node back in sync",
            )
        finally:
            prober.stop.set()
            probing.join(60)

        # Exactly once: every replayed event, and every event the API accepted.
        logged = event_ids(settings, topics.interactions)
        api_ids = set(prober.accepted)
        replayed = Counter({i: n for i, n in logged.items() if i not in api_ids})
        lost = set(expected) - set(replayed)
        doubled = {i for i, n in logged.items() if n > 1}
        print(
            f"\nleader kill: node {victim.node_id} at {killed_at:,} of {len(expected):,} events;"
            f" in the log {sum(replayed.values()):,}, lost {len(lost)}, doubled {len(doubled)};"
            f" API: {len(prober.answers)} answers,"
            f" {sum(1 for *_, s in prober.answers if s >= 500 or s == 0)} failed,"
            f" longest failure {prober.longest_failure():.1f}s, slowest answer"
            f" {prober.slowest:.1f}s"
        )
        assert not lost, f"{len(lost)} replayed events are not in the log"
        assert not doubled, f"{len(doubled)} events are in the log twice"
        assert set(replayed) == set(expected), "the log holds replayed events never sent"
        assert prober.accepted, "the API accepted nothing during the test"
        assert all(logged[i] == 1 for i in api_ids)
        assert prober.longest_failure() <= DELIVERY_TIMEOUT, prober.answers[-50:]

        # The worker's state is a clean run's: the fold of the whole log.
        wait_committed(settings, "the worker to commit everything", 300, worker, logs["worker"])
        users, items, report = fold_log(settings)
        assert report.interactions == len(logged)
        want_users = {
            u: {
                "recent_items": s.items,
                "recent_times": s.times,
                "interaction_count": s.interaction_count,
                "last_event_time": s.last_event_time,
            }
            for u, s in users.items()
        }
        want_items = {
            i: {name: getattr(s, name) for name in ITEM_FEATURES} for i, s in items.items()
        }
        item_ids = sorted(want_items)

        differ: dict[str, tuple[Any, Any]] = {}  # item: (online, the log's fold)

        def settled() -> bool:
            got = online(store, "item_stats", "item_id", item_ids, ["interaction_count"])
            differ.clear()
            for i, w in want_items.items():
                if got[i]["interaction_count"] != w["interaction_count"]:
                    differ[i] = (got[i]["interaction_count"], w["interaction_count"])
            return not differ

        try:
            wait_until(
                settled, 120, "the item counts of the whole log", proc=worker, log=logs["worker"]
            )
        except AssertionError as error:
            extra = sum(g - w for g, w in differ.values() if g is not None)
            raise AssertionError(
                f"{len(differ)} items' counts differ from the log's fold (online - log ="
                f" {extra:+}; first: {dict(sorted(differ.items())[:8])})\n{error}"
            ) from None
        assert_same_features(
            online(store, "user_recent", "user_id", sorted(want_users), USER_FEATURES), want_users
        )
        assert_same_features(
            online(store, "item_stats", "item_id", item_ids, ITEM_FEATURES), want_items
        )
        assert worker.poll() is None and api.poll() is None
