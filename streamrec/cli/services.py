"""``streamrec services up|down|status`` and ``streamrec topics ensure``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from streamrec.settings import Settings


def _services(args: argparse.Namespace, settings: Settings) -> int:
    from streamrec.infra.services import LocalServices, ServiceError

    brokers = args.brokers
    if brokers is None and args.action != "up":
        from streamrec.infra.cluster import nodes_in

        # a running cluster started with --brokers but no STREAMREC_KAFKA_BROKERS is found
        brokers = max(settings.kafka_brokers, nodes_in(settings.state_dir))
    if brokers is not None:
        settings = settings.model_copy(update={"kafka_brokers": brokers})
    services = LocalServices(settings)
    try:
        if args.action == "up":
            services.up()
            _ensure_topics(settings)
            print(
                f"kafka  {settings.bootstrap_servers}  (topics prefixed {settings.topic_prefix!r})"
            )
            if settings.kafka_brokers > 1:
                print(
                    f"       {settings.kafka_brokers} nodes, replication factor "
                    f"{settings.replication_factor}; export "
                    f"STREAMREC_KAFKA_BROKERS={settings.kafka_brokers} for the other commands"
                )
            print(f"redis  {settings.redis_connection_url}")
            print(f"state  {settings.state_dir}")
        elif args.action == "down":
            stopped = services.down()
            print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        else:
            return _print_status(services, settings)
    except ServiceError as exc:
        print(f"streamrec services {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0


def _print_status(services: object, settings: Settings) -> int:
    from streamrec.infra.lag import consumer_lag
    from streamrec.infra.services import LocalServices

    assert isinstance(services, LocalServices)
    statuses = services.status()
    for status in statuses:
        state = "up" if status.running else "down"
        pid = status.pid if status.pid is not None else "-"
        print(f"{status.name:6} {state:5} pid={pid:<8} {status.address} {status.detail}".rstrip())
    if services.kafka.status().running:
        rows = consumer_lag(settings.bootstrap_servers)
        if rows:
            print("\nconsumer group lag:")
            print(
                f"  {'group':40} {'topic':45} {'part':>4} {'committed':>10} {'end':>10} {'lag':>8}"
            )
            for row in rows:
                print(
                    f"  {row.group:40} {row.topic:45} {row.partition:>4} "
                    f"{row.committed:>10} {row.end:>10} {row.lag:>8}"
                )
        else:
            print("\nconsumer group lag: no consumer groups yet")
    return 0 if all(s.running for s in statuses) else 3


def _ensure_topics(settings: Settings) -> list[str]:
    from streams.events import Topics
    from streams.topics import ensure_topics

    return ensure_topics(
        settings.bootstrap_servers,
        Topics(settings.topic_prefix),
        settings.topic_partitions,
        replication_factor=settings.replication_factor,
        security=settings.kafka_security(),
    )


def _topics(args: argparse.Namespace, settings: Settings) -> int:
    created = _ensure_topics(settings)
    print("created: " + (", ".join(created) if created else "none (all topics exist)"))
    return 0


def register(sub: Any) -> None:
    services = sub.add_parser(
        "services",
        help="start, stop or inspect the local Kafka and Redis",
        description="Local Kafka (KRaft) and Redis, run from the state "
        "directory. `status` also shows consumer-group lag.",
    )
    services.add_argument(
        "action",
        choices=["up", "down", "status"],
        help="start the services and create the topics, stop them, or show their state",
    )
    services.add_argument(
        "--brokers",
        type=int,
        choices=[1, 3],
        help="local KRaft nodes: 3 runs a replicated cluster (replication factor 3, "
        "min.insync.replicas=2); default STREAMREC_KAFKA_BROKERS (1). Export "
        "STREAMREC_KAFKA_BROKERS=3 for the other commands, so they list every node",
    )
    services.set_defaults(func=_services)

    topics = sub.add_parser(
        "topics",
        help="create the event topics on the configured broker",
        description="Create the missing event topics (explicit partitions, retention off) "
        "under STREAMREC_TOPIC_PREFIX on STREAMREC_KAFKA_BOOTSTRAP. `services up` does this "
        "for the local broker; use this against a cluster.",
    )
    topics.add_argument("action", choices=["ensure"], help="create the missing topics")
    topics.set_defaults(func=_topics)
