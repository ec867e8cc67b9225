"""One typed settings object, read from the environment (prefix ``STREAMREC_``).

Nothing reads the environment at import time: call :func:`load_settings` (or build a
:class:`Settings` directly in tests) and pass the object down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamrec.paths import datasets_dir

# Secrets that people paste from examples; refusing them beats running an open admin API.
_PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "password", "admin", "apikey", "xxx"}


def _refuse_placeholder(secret: str) -> None:
    if secret.lower() in _PLACEHOLDER_SECRETS or len(secret) < 12:
        raise ValueError(
            "an API or ingest key is a placeholder or shorter than 12 characters; "
            "set a real secret (e.g. `openssl rand -hex 16`)"
        )


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

    # Kafka. `kafka_bootstrap` empty means the local broker(s) from `kafka_port` on.
    kafka_bootstrap: str = ""
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    kafka_brokers: int = Field(
        1,
        ge=1,
        le=9,
        description="local KRaft nodes: 1, or 3 for a replicated cluster; node i listens on "
        "kafka_port + 2i and kafka_controller_port + 2i",
    )
    kafka_heap: str = Field("512m", description="JVM heap of each local broker")
    # How clients reach a secured cluster (the production profile in README); the local
    # brokers listen on PLAINTEXT, bound to 127.0.0.1.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_sasl_username: str = ""
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: str = Field("", description="CA bundle (PEM); empty: the system's")
    topic_prefix: str = Field("streamrec.", description="keeps tests and tenants apart")
    topic_partitions: int = Field(3, ge=1)
    topic_replication_factor: int = Field(
        0, ge=0, description="copies of each topic partition; 0 means min(3, kafka_brokers)"
    )

    # Redis: the Feast online store and the "user changed" pub/sub channel.
    # `redis_url` empty means the local server on `redis_port`; "none" means no Redis
    # (Feast falls back to SQLite, SSE to polling is not offered).
    redis_url: str = ""
    redis_port: int = 6379

    # Stream worker.
    worker_batch_size: int = Field(1000, ge=1, description="events folded per Feast push")
    worker_batch_seconds: float = Field(0.05, gt=0, description="longest wait to fill a batch")
    worker_item_batch_seconds: float = Field(
        1.0, gt=0, description="the item agent's longest wait to fill a batch"
    )
    worker_item_batch_max: int = Field(
        128,
        ge=1,
        description="item-activity messages the item agent folds in one batch at most (on a "
        "backlog each is a whole batch's entries, about 1 MiB decoded)",
    )
    recent_items_max: int = Field(50, ge=1, description="recent items kept per user")
    worker_item_buffer: int = Field(
        32, ge=1, description="item-activity messages decoded ahead of the item agent"
    )
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

    # Monitoring: the Prometheus that `streamrec services up` runs, and the metrics ports of
    # the processes that are not HTTP services themselves (the worker's is `worker_port`).
    prometheus_port: int = Field(9090, description="Prometheus web UI and HTTP API")
    prometheus_scrape_seconds: float = Field(
        5.0, gt=0, description="scrape and rule interval: short, so a replay shows in seconds"
    )
    metrics_host: str = Field(
        "127.0.0.1", description="where the archiver and Spark serve /metrics"
    )
    archiver_metrics_port: int = Field(9101, description="`streamrec archive` /metrics")
    spark_metrics_port: int = Field(9102, description="`streamrec spark` /metrics")
    drift_metrics_port: int = Field(9103, description="`streamrec drift` /metrics")
    monitor_metrics_port: int = Field(9104, description="`streamrec monitor` /metrics")
    monitor_window_events: int = Field(
        1000,
        ge=10,
        description="live interactions per drift window; each set's reference measures "
        "user activity on windows of this size",
    )

    # Ray: empty means a local Ray started by the training command; else a cluster address.
    ray_address: str = ""

    # MLflow: empty means a SQLite backend and local artifacts under the state directory.
    mlflow_tracking_uri: str = ""

    # API.
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_access_log: bool = Field(
        False,
        description="a log line per request; off: /metrics counts them, and the line cost "
        "a tenth of a request's time at 1,000 requests/s",
    )
    api_keep_alive_seconds: int = Field(
        75,
        ge=1,
        description="how long an idle client connection stays open; longer than a client's or "
        "load balancer's own idle timeout (60 s is common), or the server may close one as the "
        "client sends on it, which the client sees as a reset (uvicorn's default is 5 s)",
    )
    api_key: SecretStr | None = Field(None, description="admin routes are closed while unset")
    item_cache_seconds: float = Field(5.0, gt=0, description="refresh period of item features")
    sse_ping_seconds: float = Field(15.0, gt=0)
    canary_promotion: bool = Field(
        True,
        description="a trained set that passes the gate while a champion serves becomes "
        "`challenger`, promoted by `streamrec promote` after its canary; off: champion at once",
    )
    model_poll_seconds: float = Field(
        10.0, gt=0, description="how often the API asks the registry whether the champion moved"
    )
    # API limits: what one client can cost the service.
    api_max_body_bytes: int = Field(
        64 * 1024, ge=1024, description="largest request body; a larger one gets 413"
    )
    api_max_in_progress: int = Field(
        64,
        ge=1,
        description="GET /recommend requests one API process lets wait for inference (a list "
        "to compute); more get 503 with Retry-After at once instead of queueing behind them "
        "(a kept list or the baseline's is never refused)",
    )
    api_answer_memo_size: int = Field(
        4096,
        ge=0,
        description="lists one API process keeps per served set while the user's row, the "
        "set's item features and the titles are unchanged (the same answer, not computed "
        "again; each holds the user's row, about 20 KB for 100 items seen); 0 keeps none",
    )
    api_answer_max_item_age_seconds: float = Field(
        5.0,
        ge=0,
        description="how long after an item refresh a served set's kept list computed from "
        "the item features it replaced is still served to a user whose own row has not changed; "
        "0: a list lives exactly as long as its item features",
    )
    sse_max_streams_per_user: int = Field(4, ge=1, description="open streams per user; then 429")
    sse_max_streams: int = Field(1000, ge=1, description="open streams in total; then 503")
    ingest_keys: SecretStr | None = Field(
        None, description="comma-separated keys POST /events requires (X-Ingest-Key); unset: open"
    )
    events_rate_limit: str = Field(
        "100/second",
        description="POST /events per client (its ingest key, else its address), in the "
        "`limits` notation (e.g. '100/second;3000/minute'); empty: no limit",
    )
    events_max_future_seconds: float = Field(
        300.0, ge=0, description="a client event_time further ahead of the API's clock is refused"
    )
    events_max_past_seconds: float | None = Field(
        None, gt=0, description="a client event_time further back is refused; unset: any past"
    )

    @field_validator("api_key")
    @classmethod
    def _refuse_placeholder_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _refuse_placeholder(value.get_secret_value())
        return value

    @field_validator("ingest_keys")
    @classmethod
    def _refuse_placeholder_ingest_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        for key in value.get_secret_value().split(","):
            _refuse_placeholder(key.strip())
        return value

    @field_validator("events_rate_limit")
    @classmethod
    def _parse_rate_limit(cls, value: str) -> str:
        if value.strip():
            from limits import parse_many

            parse_many(value)  # raises ValueError naming what it could not read
        return value

    @property
    def ingest_key_set(self) -> frozenset[str]:
        if self.ingest_keys is None:
            return frozenset()
        keys = self.ingest_keys.get_secret_value().split(",")
        return frozenset(key.strip() for key in keys if key.strip())

    @property
    def local_broker_ports(self) -> list[int]:
        """The client ports of the local KRaft nodes, in node order."""
        return [self.kafka_port + 2 * i for i in range(self.kafka_brokers)]

    @property
    def bootstrap_servers(self) -> str:
        # Every local node is listed, so a client can start while any one of them is down.
        return self.kafka_bootstrap or ",".join(f"127.0.0.1:{p}" for p in self.local_broker_ports)

    @property
    def replication_factor(self) -> int:
        return self.topic_replication_factor or min(3, self.kafka_brokers)

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                f"STREAMREC_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                "STREAMREC_KAFKA_SASL_USERNAME and STREAMREC_KAFKA_SASL_PASSWORD"
            )
        return self

    def kafka_security(self) -> dict[str, str]:
        """The librdkafka settings every Kafka client adds to its own: none on PLAINTEXT."""
        config: dict[str, str] = {}
        if self.kafka_security_protocol == "PLAINTEXT":
            return config
        config["security.protocol"] = self.kafka_security_protocol
        if self.kafka_security_protocol.startswith("SASL") and self.kafka_sasl_password:
            config["sasl.mechanism"] = self.kafka_sasl_mechanism
            config["sasl.username"] = self.kafka_sasl_username
            config["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        if self.kafka_ssl_ca_location:
            config["ssl.ca.location"] = self.kafka_ssl_ca_location
        return config

    def kafka_client_config(
        self, **extra: str | int | float | bool
    ) -> dict[str, str | int | float | bool]:
        """``bootstrap.servers`` and the security settings, plus a client's own ``extra``."""
        return {"bootstrap.servers": self.bootstrap_servers, **self.kafka_security(), **extra}

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
