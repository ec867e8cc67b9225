from __future__ import annotations

from pathlib import Path

import pytest

from streamrec.infra.services import KafkaBroker, RedisServer, ServiceError, new_cluster_id
from streamrec.settings import Settings


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        state_dir=tmp_path / "state", kafka_jars_dir=tmp_path / "jars", kafka_port=1, redis_port=1
    ).resolved()


def test_missing_java_is_a_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ServiceError, match=r"`java` was not found.*Java 17"):
        KafkaBroker(_settings(tmp_path)).ensure_jars()


def test_missing_maven_is_a_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "java").symlink_to("/bin/true")
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(ServiceError, match=r"`mvn` was not found.*Maven"):
        KafkaBroker(_settings(tmp_path)).ensure_jars()


def test_missing_redis_server_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ServiceError, match="apt-get install redis-server"):
        RedisServer(_settings(tmp_path)).up()


def test_stopped_services_report_down_without_pids(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    for service in (KafkaBroker(settings), RedisServer(settings)):
        status = service.status()
        assert (status.running, status.pid, status.detail) == (False, None, "stopped")


def test_cluster_ids_are_kafka_shaped() -> None:
    ids = {new_cluster_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 22 and "=" not in i for i in ids)
