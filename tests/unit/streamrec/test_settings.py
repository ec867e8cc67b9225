from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from streamrec.infra.feast_store import _redis_connection_string, feast_project, repo_config
from streamrec.settings import Settings
from streamrec.times import format_ms, parse_time_ms


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMREC_API_PORT", raising=False)
    monkeypatch.setenv("STREAMREC_KAFKA_PORT", "19999")
    monkeypatch.setenv("STREAMREC_TOPIC_PREFIX", "shop1.")
    settings = Settings()
    assert settings.bootstrap_servers == "127.0.0.1:19999"
    assert settings.topic_prefix == "shop1."
    assert settings.api_port == 8000


@pytest.mark.parametrize("secret", ["changeme", "secret", "short"])
def test_placeholder_api_keys_are_refused(secret: str) -> None:
    with pytest.raises(ValidationError, match="placeholder"):
        Settings(api_key=secret)


def test_a_real_api_key_is_accepted() -> None:
    assert Settings(api_key="3f9a0c1d2e4b5a6978").api_key is not None


def test_redis_none_means_no_redis() -> None:
    assert Settings(redis_url="none").redis_connection_url is None
    assert Settings(redis_port=7000).redis_connection_url == "redis://127.0.0.1:7000/0"


def test_resolved_paths_are_absolute() -> None:
    settings = Settings(data_dir=Path("rel/data")).resolved()
    assert settings.data_dir.is_absolute()


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("1700000000", 1_700_000_000_000),
        ("1700000000.25", 1_700_000_000_250),
        ("2023-11-14T22:13:20Z", 1_700_000_000_000),
        ("2023-11-14T22:13:20", 1_700_000_000_000),
        ("2023-11-14T23:13:20+01:00", 1_700_000_000_000),
    ],
)
def test_times_are_epoch_seconds_or_iso(text: str, ms: int) -> None:
    assert parse_time_ms(text) == ms


def test_bad_time_says_what_it_expected() -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time_ms("yesterday")
    assert format_ms(1_700_000_000_000) == "2023-11-14T22:13:20Z"


def test_feast_config_follows_settings(tmp_path: Path) -> None:
    settings = Settings(
        state_dir=tmp_path / "s", data_dir=tmp_path / "d", redis_port=7001, topic_prefix="t-1."
    ).resolved()
    config = repo_config(settings)
    assert config.project == "t_1"
    assert config.online_store.type == "redis"
    assert config.online_store.connection_string == "127.0.0.1:7001,db=0"
    assert str(config.registry.path).startswith(str(tmp_path / "s"))
    sqlite = repo_config(settings.model_copy(update={"redis_url": "none"}))
    assert sqlite.online_store.type == "sqlite"


def test_redis_url_to_feast_connection_string() -> None:
    assert _redis_connection_string("redis://:pw@h:6380/2") == "h:6380,db=2,password=pw"
    assert feast_project("...") == "streamrec"
