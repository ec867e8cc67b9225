"""Creating the event topics: explicit partitions, the configured prefix, full history kept."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streamrec.infra.kafka_retry import call_with_retry, is_retriable
from streams.events import Topics

log = logging.getLogger(__name__)

# The log is the source of truth: event topics keep everything, forever.
KEEP_FOREVER = {"retention.ms": "-1", "retention.bytes": "-1"}


def ensure_topics(
    bootstrap_servers: str,
    topics: Topics,
    partitions: int,
    timeout: float = 30.0,
    replication_factor: int = 1,
    security: Mapping[str, str] | None = None,
) -> list[str]:
    """Create the missing event topics; returns the names created. Idempotent; transient
    broker errors (a broker just started) are retried.

    Topics that exist keep their replication: raising it is a reassignment, an operator's
    decision, not something a start-up command should do behind their back.
    """
    return ensure_named_topics(
        bootstrap_servers,
        topics.all(),
        partitions,
        KEEP_FOREVER,
        timeout=timeout,
        replication_factor=replication_factor,
        security=security,
    )


def item_activity_topic(prefix: str) -> str:
    """The worker's internal topic from its user and click sides to its item side."""
    return f"{prefix}worker-item-activity"


def ensure_named_topics(
    bootstrap_servers: str,
    names: list[str],
    partitions: int,
    config: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    replication_factor: int = 1,
    security: Mapping[str, str] | None = None,
) -> list[str]:
    """Create the topics of ``names`` that are missing, with ``config``, and return once the
    broker's metadata lists them; returns the names created. Idempotent, transient broker
    errors retried."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers, **(security or {})})
    created: list[str] = []

    def create_missing() -> list[str]:
        existing = set(admin.list_topics(timeout=timeout).topics)
        wanted = [
            NewTopic(
                name,
                num_partitions=partitions,
                replication_factor=replication_factor,
                config=dict(config or {}),
            )
            for name in names
            if name not in existing
        ]
        if not wanted:
            return created
        retry: KafkaException | None = None
        for name, future in admin.create_topics(wanted, operation_timeout=timeout).items():
            try:
                future.result()
                created.append(name)
            except KafkaException as exc:
                if exc.args[0].name() == "TOPIC_ALREADY_EXISTS":
                    continue
                if not is_retriable(exc):
                    raise
                retry = exc
        if retry is not None:
            raise retry  # the next attempt creates only what is still missing
        return created

    created = call_with_retry("creating topics", create_missing)
    if created:
        _wait_until_listed(admin, created, timeout)
    return created


def _wait_until_listed(admin: AdminClient, names: list[str], timeout: float) -> None:
    """Return once the broker's metadata lists every topic of ``names`` (just created).

    A creation is acknowledged when the controller has committed it; the broker that
    answers metadata learns it a moment later, so a client started right after (the API's
    readiness check) could find the topic missing. Past ``timeout`` this only warns: every
    client retries a topic it does not see yet.
    """
    deadline = time.monotonic() + timeout
    while True:
        listed = admin.list_topics(timeout=timeout).topics
        waiting = [name for name in names if name not in listed or not listed[name].partitions]
        if not waiting:
            return
        if time.monotonic() >= deadline:
            log.warning(
                "topics created but not yet listed by the broker after %.0fs: %s",
                timeout,
                ", ".join(waiting),
            )
            return
        time.sleep(0.05)


def delete_topics(bootstrap_servers: str, names: list[str], timeout: float = 30.0) -> None:
    """Used by tests to leave no topics behind."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    existing = set(admin.list_topics(timeout=timeout).topics)
    doomed = [name for name in names if name in existing]
    if not doomed:
        return
    for future in admin.delete_topics(doomed, operation_timeout=timeout).values():
        future.result()
