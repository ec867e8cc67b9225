"""One typed settings object, read from the environment (prefix ``STREAMREC_``).

Nothing reads the environment at import time: call :func:`load_settings` (or build a
:class:`Settings` directly in tests) and pass the object down.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamrec.paths import datasets_dir

# Secrets that people paste from examples; refusing them beats running an open admin API.
_PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "password", "admin", "apikey", "xxx"}


class Settings(BaseSettings):
    """Defaults run everything on one machine; every field can be set as STREAMREC_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="STREAMREC_", extra="ignore")

    # Folders. Both default to folders under ./var, which the repository ignores.
    data_dir: Path = Field(Path("var/data"), description="datasets and the Parquet event log")
    state_dir: Path = Field(Path("var/state"), description="service data, logs, pid files")
    kafka_jars_dir: Path = Field(
        Path.home() / ".cache" / "streamrec" / "kafka-jars",
        description="broker jars fetched by Maven; outside the repository",
    )

    # Kafka. `kafka_bootstrap` empty means the local broker on `kafka_port`.
    kafka_bootstrap: str = ""
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    kafka_heap: str = "512m"
    topic_prefix: str = Field("streamrec.", description="keeps tests and tenants apart")
    topic_partitions: int = Field(3, ge=1)

    # Redis: the Feast online store and the "user changed" pub/sub channel.
    # `redis_url` empty means the local server on `redis_port`; "none" means no Redis
    # (Feast falls back to SQLite, SSE to polling is not offered).
    redis_url: str = ""
    redis_port: int = 6379

    # Stream worker.
    worker_batch_size: int = Field(1000, ge=1, description="events folded per Feast push")
    worker_batch_seconds: float = Field(0.05, gt=0, description="longest wait to fill a batch")
    recent_items_max: int = Field(50, ge=1, description="recent items kept per user")
    worker_host: str = Field("127.0.0.1", description="Faust web host (/metrics)")
    worker_port: int = Field(6066, description="Faust web port (/metrics)")

    # Spark windows (`streamrec spark`). The feature names (trending_1h, ..._24h) are those
    # of the default window lengths below.
    spark_master: str = Field("local[*]", description="local[*], or a cluster master URL")
    spark_jars_dir: Path = Field(
        Path.home() / ".cache" / "streamrec" / "spark-jars",
        description="Spark's Kafka connector jars fetched by Maven; outside the repository",
    )
    spark_driver_memory: str = "1g"
    spark_shuffle_partitions: int = Field(4, ge=1)
    spark_trigger_seconds: float = Field(5.0, gt=0, description="micro-batch interval")
    spark_max_offsets_per_trigger: int = Field(200_000, ge=1)
    spark_watermark_seconds: int = Field(900, ge=0, description="allowed event lateness")
    spark_short_window_seconds: int = Field(3600, gt=0)
    spark_short_slide_seconds: int = Field(300, gt=0)
    spark_long_window_seconds: int = Field(86_400, gt=0)
    spark_long_slide_seconds: int = Field(3600, gt=0)
    spark_interest_categories: int = Field(10, ge=1, description="top categories kept per user")

    # Ray: empty means a local Ray started by the training command; else a cluster address.
    ray_address: str = ""

    # MLflow: empty means a SQLite backend and local artifacts under the state directory.
    mlflow_tracking_uri: str = ""

    # API.
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_key: SecretStr | None = Field(None, description="admin routes are closed while unset")
    item_cache_seconds: float = Field(5.0, gt=0, description="refresh period of item features")
    sse_ping_seconds: float = Field(15.0, gt=0)
    model_poll_seconds: float = Field(
        10.0, gt=0, description="how often the API asks the registry whether the champion moved"
    )

    @field_validator("api_key")
    @classmethod
    def _refuse_placeholder_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        secret = value.get_secret_value()
        if secret.lower() in _PLACEHOLDER_SECRETS or len(secret) < 12:
            raise ValueError(
                "STREAMREC_API_KEY is a placeholder or shorter than 12 characters; "
                "set a real secret (e.g. `openssl rand -hex 16`)"
            )
        return value

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.kafka_port}"

    @property
    def redis_connection_url(self) -> str | None:
        if self.redis_url.lower() == "none":
            return None
        return self.redis_url or f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def mlflow_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.state_dir / 'mlflow' / 'mlflow.db'}"

    @property
    def mlflow_artifacts(self) -> Path:
        """Where a local tracking backend keeps artifacts (unused with a tracking server)."""
        return self.state_dir / "mlflow" / "artifacts"

    @property
    def datasets_dir(self) -> Path:
        """The prepared datasets (`data prepare`); not the archive of the topics."""
        return datasets_dir(self.data_dir)

    def resolved(self) -> Settings:
        """A copy with the folders made absolute, so child processes agree on them."""
        return self.model_copy(
            update={
                "data_dir": self.data_dir.resolve(),
                "state_dir": self.state_dir.resolve(),
                "kafka_jars_dir": self.kafka_jars_dir.resolve(),
                "spark_jars_dir": self.spark_jars_dir.resolve(),
            }
        )


def load_settings() -> Settings:
    return Settings().resolved()
