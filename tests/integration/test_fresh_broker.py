"""Issue 19 §3: every Kafka client path works against a broker that was just created.

A fresh broker has no group coordinator until it has created ``__consumer_offsets``;
``streamrec archive --once`` used to crash there with NOT_COORDINATOR. The broker here is
started by this test, and each path runs the moment it answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from confluent_kafka.admin import AdminClient

from streamrec.infra.feast_store import apply_definitions, open_store
from streamrec.infra.lag import consumer_lag
from streamrec.infra.processes import run_streamrec, streamrec_process
from streamrec.paths import dataset_events
from streamrec.settings import Settings
from streams.archiver import Archiver
from streams.backfill import fold_log
from streams.events import Interaction, Topics
from streams.producer import EventProducer
from streams.topics import ensure_topics
from tests.support import private_settings, running_services, wait_committed, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Settings]:
    settings = private_settings(tmp_path)
    with running_services(settings):
        yield settings


@pytest.mark.timeout(300)
def test_every_client_path_on_a_just_created_broker(fresh: Settings) -> None:
    topics = Topics(fresh.topic_prefix)
    # replay's path: create the topics, then produce
    created = ensure_topics(fresh.bootstrap_servers, topics, fresh.topic_partitions)
    assert set(created) == set(topics.all())
    # listed at once: a new client's metadata has each with its partitions (the API's
    # readiness check right after topics were created once found them missing)
    listed = AdminClient({"bootstrap.servers": fresh.bootstrap_servers}).list_topics(timeout=10)
    for name in topics.all():
        assert len(listed.topics[name].partitions) == fresh.topic_partitions, name
    # the archiver at once: the first consumer group this broker ever sees, on empty topics
    assert Archiver(fresh).run_once().files == []
    with EventProducer(fresh.bootstrap_servers, topics) as producer:
        for n in range(10):
            producer.send(Interaction(user_id=f"u{n % 3}", item_id=f"i{n}", action="view"))
    stats = Archiver(fresh).run_once()
    assert stats.rows_written == {topics.interactions: 10}
    groups = {row.group for row in consumer_lag(fresh.bootstrap_servers)}
    assert f"{fresh.topic_prefix}archiver" in groups
    users, _items, report = fold_log(fresh)
    assert report.interactions == 10 and len(users) == 3


@pytest.mark.timeout(400)
def test_worker_and_replay_start_on_a_just_created_broker(tmp_path: Path) -> None:
    """The worker starts the moment a new broker answers, before any topic exists, and
    `streamrec replay` runs right after it: both retry what a fresh broker answers
    (no coordinator yet, topics being created) and every replayed event is folded."""
    settings = private_settings(tmp_path)
    run_streamrec(settings, "data", "prepare", "synthetic:users=50,items=40,events=2000,seed=3")
    events = pq.read_table(dataset_events(settings.data_dir, "synthetic")).to_pandas()
    log = tmp_path / "worker.log"
    with running_services(settings):
        apply_definitions(open_store(settings))
        with streamrec_process(settings, "worker", log=log) as worker:
            run_streamrec(settings, "replay", "synthetic", "--speed", "max")
            wait_committed(settings, "the worker to fold the replay", 240, worker, log)
            store = open_store(settings)
            busiest = events["user_id"].value_counts()
            user, count = str(busiest.index[0]), int(busiest.iloc[0])

            def folded() -> bool:
                row = store.get_online_features(
                    features=["user_recent:interaction_count"], entity_rows=[{"user_id": user}]
                ).to_dict()
                return row["interaction_count"][0] == count

            wait_until(folded, 60, f"{user}'s {count} interactions online", proc=worker, log=log)
