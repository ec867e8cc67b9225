from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streamrec.settings import Settings
from tests.support import create_own_topics, delete_own_topics, isolated_settings, require_services


@pytest.fixture
def redis_settings(tmp_path: Path) -> Iterator[Settings]:
    """Integration: this test's own keys (its topic prefix) on the running Redis, removed
    after it."""
    settings = isolated_settings(tmp_path)
    require_services(settings)
    yield settings
    import redis

    client = redis.Redis.from_url(settings.redis_connection_url or "")
    for key in client.scan_iter(f"{settings.topic_prefix}*"):
        client.delete(key)


@pytest.fixture
def live_settings(tmp_path: Path) -> Iterator[Settings]:
    """Integration and e2e: this test's own topics on the running broker and Redis."""
    settings = isolated_settings(tmp_path)
    require_services(settings)
    create_own_topics(settings)
    yield settings
    delete_own_topics(settings)
