"""Issue 19 §3: every Kafka client path works against a broker that was just created.

A fresh broker has no group coordinator until it has created ``__consumer_offsets``;
``streamrec archive --once`` used to crash there with NOT_COORDINATOR. The broker here is
started by this test, and each path runs the moment it answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streamrec.infra.lag import consumer_lag
from streamrec.settings import Settings
from streams.archiver import Archiver
from streams.backfill import fold_log
from streams.events import Interaction, Topics
from streams.producer import EventProducer
from streams.topics import ensure_topics
from tests.support import private_settings, running_services

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
