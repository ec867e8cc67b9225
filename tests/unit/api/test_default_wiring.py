"""create_app with no overrides: adapters chosen from settings, closed on shutdown."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from api.adapters.feast_features import FeastFeatureReader
from api.adapters.kafka_sink import KafkaEventSink
from api.adapters.memory_changes import InMemoryChangeFeed
from api.main import create_app
from streamrec.settings import Settings


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_real_adapters_from_settings_and_readiness_names_the_missing_broker(
    tmp_path: Path,
) -> None:
    pytest.importorskip("feast")
    from streamrec.infra.feast_store import apply_definitions, open_store

    settings = Settings(
        data_dir=tmp_path / "data",
        state_dir=tmp_path / "state",
        redis_url="none",  # Feast on SQLite; no pub/sub
        kafka_port=unused_port(),  # nothing listens: the broker check must fail
    )
    apply_definitions(open_store(settings))
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        services = app.state.services
        assert isinstance(services.features, FeastFeatureReader)
        assert isinstance(services.sink, KafkaEventSink)
        assert isinstance(services.changes, InMemoryChangeFeed)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/healthz")).status_code == 200
            await services.state.index_built.wait()
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["failed"] == ["broker"]
            assert ready.json()["checks"]["broker"]["detail"] == (
                "the event log does not accept writes"
            )
