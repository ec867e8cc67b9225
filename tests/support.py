"""Helpers shared by the integration and end-to-end suites: settings per test, the
real services started by `streamrec services up`, and child processes of our commands."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from streamrec.infra.processes import (
    REPO_ROOT,
    free_port,
    settings_env,
    stop_process,
    streamrec_process,
)
from streamrec.infra.prometheus import PrometheusServer, stack_targets
from streamrec.infra.services import LocalServices
from streamrec.settings import Settings
from streams.events import MonitorDecision, Topics, decode

__all__ = ["REPO_ROOT", "free_port", "settings_env", "stop_process", "streamrec_process"]
T = TypeVar("T")


def isolated_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings against the running services, with topics, Feast project and folders of
    this test alone (the services themselves come from the environment)."""
    base = Settings()
    prefix = f"t{uuid.uuid4().hex[:10]}."
    values: dict[str, Any] = {
        "topic_prefix": prefix,
        "state_dir": tmp_path / "state",
        "data_dir": tmp_path / "data",
        "worker_port": free_port(),
        "api_port": free_port(),
        "archiver_metrics_port": free_port(),
        "spark_metrics_port": free_port(),
        "drift_metrics_port": free_port(),
        "monitor_metrics_port": free_port(),
        "kafka_jars_dir": base.kafka_jars_dir.resolve(),
    }
    values.update(overrides)
    return base.model_copy(update=values).resolved()


def api_ready(base_url: str) -> Callable[[], bool]:
    """A ``wait_until`` probe: the API at ``base_url`` answers ``/readyz`` with 200 (not
    listening yet, or any other answer, is not ready)."""
    import httpx

    url = f"{base_url.rstrip('/')}/readyz"

    def ready() -> bool:
        try:
            return httpx.get(url, timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    return ready


def require_services(settings: Settings) -> None:
    """Fail (not skip) with instructions when the broker or Redis is not running."""
    import redis
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    try:
        AdminClient({"bootstrap.servers": settings.bootstrap_servers}).list_topics(timeout=5)
        redis.Redis.from_url(settings.redis_connection_url or "").ping()
    except (KafkaException, redis.RedisError) as exc:
        raise RuntimeError(
            "integration tests need the real services: run `make test` (or "
            f"`streamrec services up` with the same STREAMREC_* ports): {exc}"
        ) from exc


def wait_until(
    probe: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.2,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> T:
    """Poll until probe returns something truthy; fail saying what never happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(interval)
    tail = ""
    if log is not None and log.exists():
        tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:])
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{tail}")


def private_settings(root: Path, **overrides: Any) -> Settings:
    """Settings for services of a test's own (a broker and a Redis on free ports under
    ``root``), for the tests that kill or restart them."""
    values: dict[str, Any] = {
        "state_dir": root / "services",
        "kafka_port": free_port(),
        "kafka_controller_port": free_port(),
        "redis_port": free_port(),
        "prometheus_port": free_port(),  # `up` starts one too; the suite's holds its port
        "kafka_bootstrap": "",
        "redis_url": "",
    }
    return isolated_settings(root, **{**values, **overrides})


@contextmanager
def running_services(settings: Settings) -> Iterator[LocalServices]:
    """``settings``' local services, up for the block and down after it, also on failure."""
    services = LocalServices(settings)
    try:
        services.up()
        yield services
    finally:
        services.down()


def services_prometheus(settings: Settings) -> PrometheusServer:
    """The Prometheus of the running services: their state directory, not this test's."""
    prometheus = PrometheusServer(
        settings.model_copy(update={"state_dir": Settings().resolved().state_dir})
    )
    assert prometheus.healthy(), "Prometheus is not running: `streamrec services up` starts it"
    return prometheus


@contextmanager
def scraped(prometheus: PrometheusServer, settings: Settings) -> Iterator[str]:
    """This test's processes in Prometheus's targets, labelled with its topic prefix."""
    name = f"test-{settings.topic_prefix.rstrip('.')}"
    prometheus.add_targets(name, stack_targets(settings), {"stack": settings.topic_prefix})
    try:
        yield settings.topic_prefix
    finally:
        prometheus.remove_targets(name)


def create_own_topics(settings: Settings) -> None:
    """Create the topics of ``settings``' prefix, replicated as its broker(s) allow."""
    from streams.topics import ensure_topics

    ensure_topics(
        settings.bootstrap_servers,
        Topics(settings.topic_prefix),
        settings.topic_partitions,
        replication_factor=settings.replication_factor,
    )


def delete_own_topics(settings: Settings) -> None:
    """Delete every topic of ``settings``' prefix (a test's own, on a shared broker)."""
    from confluent_kafka.admin import AdminClient

    from streams.topics import delete_topics

    names = [
        name
        for name in AdminClient({"bootstrap.servers": settings.bootstrap_servers})
        .list_topics(timeout=10)
        .topics
        if name.startswith(settings.topic_prefix)
    ]
    delete_topics(settings.bootstrap_servers, names)


def paced_speed(settings: Settings, source: str, seconds: float) -> str:
    """The `streamrec replay --speed` at which the prepared log ``source`` takes about
    ``seconds``: fault tests need the replay still running when they strike, and
    ``--speed max`` writes 100k events in a second or two."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from streamrec.paths import dataset_events

    times = pq.read_table(dataset_events(settings.data_dir, source), columns=["event_time"])
    span_ms = pc.max(times["event_time"]).as_py() - pc.min(times["event_time"]).as_py()
    return f"{max(1.0, span_ms / 1000 / seconds):.0f}"


def log_end(settings: Settings, topic: str) -> int:
    """Records in ``topic`` now: the sum of its partitions' high watermarks."""
    from confluent_kafka import Consumer, TopicPartition

    probe = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": "probe"})
    try:
        return sum(
            probe.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
            for p in range(settings.topic_partitions)
        )
    finally:
        probe.close()


def event_ids(settings: Settings, topic: str) -> Counter[str]:
    """How many times each event id is in ``topic``, read from the beginning to its end."""
    from streams.backfill import read_log

    ids: Counter[str] = Counter()
    for batch in read_log(settings.bootstrap_servers, [topic]):
        for *_, value in batch:
            ids[json.loads(value or b"{}")["event_id"]] += 1
    return ids


def wait_committed(settings: Settings, what: str, timeout: float, proc: Any, log: Path) -> None:
    """Wait until the worker's group has committed every record; name what is still
    behind when it does not."""
    from streamrec.infra.lag import PartitionLag, describe_behind, partitions_behind

    group = f"{settings.topic_prefix}worker"
    behind: list[PartitionLag] | None = None

    def caught_up() -> bool:
        nonlocal behind
        behind = partitions_behind(settings.bootstrap_servers, group)
        return behind == []

    try:
        wait_until(caught_up, timeout, what, 0.5, proc, log)
    except AssertionError as error:
        raise AssertionError(f"{error}\nstill behind: {describe_behind(behind)}") from None


def monitor_decisions(settings: Settings) -> list[MonitorDecision]:
    """Every decision on the monitor topic of ``settings``' prefix, in order."""
    from streams.backfill import read_log

    found = []
    for batch in read_log(settings.bootstrap_servers, [Topics(settings.topic_prefix).monitor]):
        for *_, value in batch:
            found.append(decode(MonitorDecision, value))
    return found
