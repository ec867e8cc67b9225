from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streamrec.settings import Settings
from streams.events import Topics
from streams.topics import delete_topics, ensure_topics
from tests.support import isolated_settings, require_services


@pytest.fixture
def live_settings(tmp_path: Path) -> Iterator[Settings]:
    """Integration and e2e: this test's own topics on the running broker and Redis."""
    settings = isolated_settings(tmp_path)
    require_services(settings)
    topics = Topics(settings.topic_prefix)
    ensure_topics(
        settings.bootstrap_servers,
        topics,
        settings.topic_partitions,
        replication_factor=settings.replication_factor,
    )
    yield settings
    from confluent_kafka.admin import AdminClient

    names = [
        name
        for name in AdminClient({"bootstrap.servers": settings.bootstrap_servers})
        .list_topics(timeout=10)
        .topics
        if name.startswith(settings.topic_prefix)
    ]
    delete_topics(settings.bootstrap_servers, names)
