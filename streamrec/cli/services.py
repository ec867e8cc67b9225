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
            print(f"prometheus  {services.prometheus.url}")
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
    from streamrec.infra.lag import consumer_lag, idle_groups
    from streamrec.infra.prometheus import probe, stack_targets
    from streamrec.infra.services import LocalServices

    assert isinstance(services, LocalServices)
    statuses = services.status()
    for status in statuses:
        _print_row(status)
    # The stack's own processes are started by their commands, not by `services up`:
    # shown for their health, not counted in the exit code.
    print("\nstack processes (health from their /metrics or /healthz):")
    for target in stack_targets(settings):
        _print_row(probe(target))
    if services.kafka.status().running:
        rows = consumer_lag(settings.bootstrap_servers)
        idle = idle_groups(settings.bootstrap_servers)
        if rows:
            print("\nconsumer group lag (an idle group has no consumer running; its lag is")
            print("what it would catch up on when started, not a consumer falling behind):")
            print(
                f"  {'group':40} {'topic':45} {'part':>4} {'state':>6} "
                f"{'committed':>10} {'end':>10} {'lag':>8}"
            )
            for row in rows:
                state = "idle" if row.group in idle else "active"
                print(
                    f"  {row.group:40} {row.topic:45} {row.partition:>4} {state:>6} "
                    f"{row.committed:>10} {row.end:>10} {row.lag:>8}"
                )
        else:
            print("\nconsumer group lag: no consumer groups yet")
    return 0 if all(s.running for s in statuses) else 3


def _print_row(status: Any) -> None:
    state = "up" if status.running else "down"
    pid = status.pid if status.pid is not None else "-"
    print(f"{status.name:10} {state:5} pid={pid:<8} {status.address} {status.detail}".rstrip())


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


def _dashboards(args: argparse.Namespace, settings: Settings) -> int:
    from streamrec.infra.dashboards import stale_dashboards, write_dashboards

    if args.action == "check":
        stale = stale_dashboards()
        for path in stale:
            print(f"stale: {path} (run `streamrec dashboards write`)", file=sys.stderr)
        return 1 if stale else 0
    for path in write_dashboards():
        print(f"wrote {path}")
    return 0


def register(sub: Any) -> None:
    services = sub.add_parser(
        "services",
        help="start, stop or inspect the local Kafka, Redis and Prometheus",
        description="Local Kafka (KRaft), Redis and Prometheus, run from the state "
        "directory. `status` also shows the health of the stack's processes (API, worker, "
        "Spark job, archiver) and consumer-group lag.",
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

    dashboards = sub.add_parser(
        "dashboards",
        help="generate the Grafana dashboards into deploy/grafana/ and deploy/k8s/",
        description="The dashboards are Python (streamrec/infra/dashboards.py, with "
        "grafana-foundation-sdk); `write` regenerates the JSON that docker-compose and "
        "Kubernetes provision, `check` fails when the committed JSON is not current.",
    )
    dashboards.add_argument(
        "action",
        choices=["write", "check"],
        help="regenerate the JSON, or fail if the committed JSON is not current",
    )
    dashboards.set_defaults(func=_dashboards)
