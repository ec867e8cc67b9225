"""Creating the event topics: explicit partitions, the configured prefix, full history kept."""

from __future__ import annotations

from collections.abc import Mapping

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streams.events import Topics

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
    """Create the missing event topics; returns the names created. Idempotent.

    Topics that exist keep their replication: raising it is a reassignment, an operator's
    decision, not something a start-up command should do behind their back.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap_servers, **(security or {})})
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [
        NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=replication_factor,
            config=KEEP_FOREVER,
        )
        for name in topics.all()
        if name not in existing
    ]
    if not wanted:
        return []
    created = []
    for name, future in admin.create_topics(wanted, operation_timeout=timeout).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise
    return created


def delete_topics(bootstrap_servers: str, names: list[str], timeout: float = 30.0) -> None:
    """Used by tests to leave no topics behind."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    existing = set(admin.list_topics(timeout=timeout).topics)
    doomed = [name for name in names if name in existing]
    if not doomed:
        return
    for future in admin.delete_topics(doomed, operation_timeout=timeout).values():
        future.result()
