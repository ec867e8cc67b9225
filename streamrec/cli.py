"""`streamrec`: one command with subcommands; `streamrec SUBCOMMAND --help` for each."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Sequence

from pydantic import ValidationError

from streamrec.settings import Settings, load_settings


def _services(args: argparse.Namespace, settings: Settings) -> int:
    from streamrec.services import LocalServices, ServiceError

    services = LocalServices(settings)
    try:
        if args.action == "up":
            services.up()
            print(
                f"kafka  {settings.bootstrap_servers}  (topics prefixed {settings.topic_prefix!r})"
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
    from streamrec.services import LocalServices
    from streams.lag import consumer_lag

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


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from streams.agents import run_worker

    run_worker(settings, loglevel=args.loglevel)
    return 0


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from api.main import run

    if args.port is not None:
        settings = settings.model_copy(update={"api_port": args.port})
    run(settings)
    return 0


def _topics(args: argparse.Namespace, settings: Settings) -> int:
    from streams.events import Topics
    from streams.topics import ensure_topics

    created = ensure_topics(
        settings.bootstrap_servers, Topics(settings.topic_prefix), settings.topic_partitions
    )
    print("created: " + (", ".join(created) if created else "none (all topics exist)"))
    return 0


def _features(args: argparse.Namespace, settings: Settings) -> int:
    from streamrec.feast_store import apply_definitions, open_store

    store = open_store(settings)
    apply_definitions(store)
    views = sorted(fv.name for fv in store.list_feature_views())
    print(f"applied Feast definitions: {', '.join(views)}")
    return 0


def _archive(args: argparse.Namespace, settings: Settings) -> int:
    from streams.archiver import install_stop_signals, run_archiver

    stop = threading.Event()
    restore = install_stop_signals(stop)
    try:
        stats = run_archiver(
            settings,
            once=args.once,
            flush_records=args.flush_records,
            flush_seconds=args.flush_seconds,
            stop=stop,
        )
    finally:
        restore()
    print(stats.summary())
    return 0


def _materialize(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from streamrec.materialize import BATCH_VIEWS, materialize

    try:
        report = materialize(
            settings,
            end_ms=args.end if args.end is not None else int(time.time() * 1000),
            start_ms=None if args.incremental else args.start,
            views=tuple(args.views) if args.views else BATCH_VIEWS,
            build_history=not args.no_build,
        )
    except ValueError as exc:
        print(f"streamrec materialize: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


def _backfill(args: argparse.Namespace, settings: Settings) -> int:
    from streamrec.feast_store import apply_definitions, open_store
    from streams.backfill import run_backfill
    from streams.readiness import redis_store
    from streams.seen import RedisSeenItems
    from streams.sinks import FeastFeatureSink

    store = open_store(settings)
    apply_definitions(store)
    redis_url = settings.redis_connection_url
    report = run_backfill(
        settings,
        FeastFeatureSink(store),
        since_ms=args.since,
        reset_worker=args.reset_worker,
        seen_writer=RedisSeenItems(redis_url, settings.topic_prefix) if redis_url else None,
        marker=redis_store(redis_url) if redis_url else None,
    )
    print(report.summary())
    return 0


def _spark(args: argparse.Namespace, settings: Settings) -> int:
    from streamrec.feast_store import apply_definitions, open_store
    from streams.archiver import install_stop_signals
    from streams.sinks import FeastFeatureSink
    from streams.spark.jars import SparkJarsError
    from streams.spark.job import JobConfig, SparkJobError, run_spark_job

    try:
        config = JobConfig.from_settings(settings)
    except ValueError as exc:
        print(f"streamrec spark: bad window settings: {exc}", file=sys.stderr)
        return 2
    logging.getLogger("py4j").setLevel(logging.WARNING)  # one INFO line per callback
    store = open_store(settings)
    apply_definitions(store)
    stop = threading.Event()
    restore = install_stop_signals(stop)
    try:
        report = run_spark_job(
            settings,
            FeastFeatureSink(store),
            available_now=args.available_now,
            stop=stop,
            config=config,
        )
    except (SparkJarsError, SparkJobError) as exc:
        print(f"streamrec spark: {exc}", file=sys.stderr)
        return 1
    finally:
        restore()
    print(report.summary())
    return 0


def build_parser() -> argparse.ArgumentParser:
    from replay.commands import _time_arg, add_data_parser, add_replay_parser

    parser = argparse.ArgumentParser(
        prog="streamrec",
        description="Real-time recommendations from an event log. Settings come from "
        "STREAMREC_* environment variables (see README).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    services = sub.add_parser(
        "services",
        help="start, stop or inspect the local Kafka and Redis",
        description="Local Kafka (KRaft) and Redis, run from the state "
        "directory. `status` also shows consumer-group lag.",
    )
    services.add_argument("action", choices=["up", "down", "status"])
    services.set_defaults(func=_services)

    add_data_parser(sub)
    add_replay_parser(sub)

    worker = sub.add_parser(
        "worker",
        help="run the stream worker (Faust agents → Feast)",
        description="Consume interactions and clicks, fold them into "
        "features, push them to the Feast online store, and publish "
        "'user changed' notices. Runs until interrupted.",
    )
    worker.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    worker.set_defaults(func=_worker)

    serve = sub.add_parser(
        "serve",
        help="run the HTTP API (/recommend, /events, SSE, metrics)",
        description="Serve the HTTP API on STREAMREC_API_HOST:STREAMREC_API_PORT.",
    )
    serve.add_argument("--port", type=int, default=None, help="override STREAMREC_API_PORT")
    serve.set_defaults(func=_serve)

    topics = sub.add_parser(
        "topics",
        help="create the event topics on the configured broker",
        description="Create the missing event topics (explicit partitions, retention off) "
        "under STREAMREC_TOPIC_PREFIX on STREAMREC_KAFKA_BOOTSTRAP. `services up` does this "
        "for the local broker; use this against a cluster.",
    )
    topics.add_argument("action", choices=["ensure"])
    topics.set_defaults(func=_topics)

    features = sub.add_parser(
        "features",
        help="Feast repository commands",
        description="Apply feature_repo/definitions.py to the Feast "
        "registry of this environment (Redis online store).",
    )
    features.add_argument("action", choices=["apply"])
    features.set_defaults(func=_features)

    materialize = sub.add_parser(
        "materialize",
        help="fill the online store from the offline store (Feast materialize)",
        description="Fold the archived log into the Feast batch sources, then copy each "
        "entity's latest row stamped in [--start, --end] (or, with --incremental, since the "
        "previous run of each view) to the online store.",
    )
    materialize.add_argument("--end", type=_time_arg, metavar="T", help="default: now")
    span = materialize.add_mutually_exclusive_group(required=True)
    span.add_argument("--start", type=_time_arg, metavar="T")
    span.add_argument("--incremental", action="store_true")
    materialize.add_argument(
        "--views", nargs="+", metavar="VIEW", help="feature views (default: the batch views)"
    )
    materialize.add_argument(
        "--no-build", action="store_true", help="use the batch sources as they are"
    )
    materialize.set_defaults(func=_materialize)

    archive = sub.add_parser(
        "archive",
        help="archive the event topics to the Parquet event log (Feast offline store)",
        description="Consume interactions, recommendations and clicks into Parquet part "
        "files under STREAMREC_DATA_DIR/archive/<topic>/, committing offsets only after "
        "each file is in place. Runs until SIGTERM unless --once.",
    )
    archive.add_argument(
        "--once", action="store_true", help="drain to the current end offsets, then exit"
    )
    archive.add_argument("--flush-records", type=int, default=50_000, metavar="N")
    archive.add_argument("--flush-seconds", type=float, default=10.0, metavar="T")
    archive.set_defaults(func=_archive)

    backfill = sub.add_parser(
        "backfill",
        help="rebuild the online store by folding the event topics from the log",
        description="Read interactions and clicks from the beginning of their topics up to "
        "their current end, fold them with the worker's functions and push every user's and "
        "item's features to the online store. --since keeps only events at or after a time.",
    )
    when = backfill.add_mutually_exclusive_group()
    when.add_argument(
        "--from-beginning", action="store_true", help="every event in the log (the default)"
    )
    when.add_argument(
        "--since",
        type=_time_arg,
        default=None,
        metavar="T",
        help="only events with event time >= T (ISO 8601 or epoch seconds)",
    )
    backfill.add_argument(
        "--reset-worker",
        action="store_true",
        help="also delete the stopped worker's consumer group and table changelogs, so its "
        "next start rebuilds the Faust tables from the log",
    )
    backfill.set_defaults(func=_backfill)

    spark = sub.add_parser(
        "spark",
        help="run the Spark Structured Streaming windows (sliding windows → Feast)",
        description="Read interactions, recommendations and clicks with Spark's Kafka source "
        "and push sliding-window features (item trending score, click-through rate, user "
        "category interests) to the Feast online store. Checkpoints live under "
        "STREAMREC_STATE_DIR/spark/; STREAMREC_SPARK_MASTER picks a cluster. Runs until "
        "SIGTERM unless --available-now.",
    )
    spark.add_argument(
        "--available-now",
        action="store_true",
        help="process what the topics hold now, then exit",
    )
    spark.set_defaults(func=_spark)

    from training.api_check import add_api_check_parser
    from training.pipeline import add_train_parser

    add_train_parser(sub)
    add_api_check_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = load_settings()
    except ValidationError as exc:
        print(f"streamrec: bad settings:\n{exc}", file=sys.stderr)
        return 2
    code: int = args.func(args, settings)
    return code


if __name__ == "__main__":
    sys.exit(main())
