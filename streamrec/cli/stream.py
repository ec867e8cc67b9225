"""The stream processors and the stores they fill: ``worker``, ``spark``, ``archive``,
``backfill``, ``materialize`` and ``features apply``."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from typing import Any

from streamrec.cli.args import time_arg
from streamrec.settings import Settings


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from streams.worker import run_worker

    run_worker(settings, loglevel=args.loglevel)
    return 0


def _features(args: argparse.Namespace, settings: Settings) -> int:
    from streamrec.infra.feast_store import apply_definitions, open_store

    store = open_store(settings)
    apply_definitions(store)
    views = sorted(fv.name for fv in store.list_feature_views())
    print(f"applied Feast definitions: {', '.join(views)}")
    return 0


def _archive(args: argparse.Namespace, settings: Settings) -> int:
    from streamrec.infra.metrics import MetricsServer
    from streams.archiver import Archiver, install_stop_signals
    from streams.archiver_metrics import archiver_registry

    archiver = Archiver(
        settings, flush_records=args.flush_records, flush_seconds=args.flush_seconds
    )
    if args.once:
        print(archiver.run_once().summary())
        return 0
    stop = threading.Event()
    restore = install_stop_signals(stop)
    server = MetricsServer(
        archiver_registry(archiver), settings.archiver_metrics_port, settings.metrics_host
    )
    try:
        stats = archiver.run(stop)
    finally:
        server.close()
        restore()
    print(stats.summary())
    return 0


def _drift(args: argparse.Namespace, settings: Settings) -> int:
    from streamrec.infra.metrics import MetricsServer
    from streams.archiver import install_stop_signals
    from streams.drift_monitor import DriftMetrics, run_drift_monitor

    reference: Any = args.reference_until
    if reference is None:
        from training import registry
        from training.monitoring.reference import champion

        client = registry.configure(settings)

        def reference() -> Any:
            serving = champion(client)
            return serving.reference if serving is not None else None

    metrics = DriftMetrics.create()
    stop = threading.Event()
    restore = install_stop_signals(stop)
    server = MetricsServer(metrics.registry, settings.drift_metrics_port, settings.metrics_host)
    try:
        results = run_drift_monitor(
            settings,
            metrics,
            reference=reference,
            window_events=args.window_events,
            every_seconds=args.every,
            stop=stop,
            once=args.once,
        )
    finally:
        server.close()
        restore()
    if not results:
        print("drift: no reference, or not enough archived interactions to compare with it")
    for r in results:
        print(f"{r.column:16} {r.test:15} {r.score:.4g}{'  DRIFT' if r.drifted else ''}")
    return 0


def _materialize(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from training.data.materialize import BATCH_VIEWS, materialize

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
    from streamrec.infra.feast_store import apply_definitions, open_store
    from streamrec.infra.readiness import redis_store
    from streamrec.infra.seen import RedisSeenItems
    from streams.backfill import run_backfill
    from streams.sinks import FeastFeatureSink, RedisChangeNotifier

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
        notifier=RedisChangeNotifier(redis_url, settings.topic_prefix) if redis_url else None,
    )
    print(report.summary())
    if args.experiments:
        from streams.experiment_backfill import backfill_counters

        try:
            print(backfill_counters(settings).summary())
        except (RuntimeError, ValueError) as exc:
            print(f"streamrec backfill: {exc}", file=sys.stderr)
            return 2
    return 0


def _spark(args: argparse.Namespace, settings: Settings) -> int:
    from streamrec.infra.feast_store import apply_definitions, open_store
    from streamrec.infra.metrics import MetricsServer
    from streams.archiver import install_stop_signals
    from streams.sinks import FeastFeatureSink
    from streams.spark.jars import SparkJarsError
    from streams.spark.job import JobConfig, SparkJobError, run_spark_job
    from streams.spark.metrics import SparkJobMetrics

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
    metrics = SparkJobMetrics()
    server = MetricsServer(metrics.registry, settings.spark_metrics_port, settings.metrics_host)
    try:
        report = run_spark_job(
            settings,
            FeastFeatureSink(store),
            available_now=args.available_now,
            stop=stop,
            config=config,
            metrics=metrics,
        )
    except (SparkJarsError, SparkJobError) as exc:
        print(f"streamrec spark: {exc}", file=sys.stderr)
        return 1
    finally:
        server.close()
        restore()
    print(report.summary())
    return 0


def register(sub: Any) -> None:
    worker = sub.add_parser(
        "worker",
        help="run the stream worker (Faust agents → Feast)",
        description="Consume interactions and clicks, fold them into "
        "features, push them to the Feast online store, and publish "
        "'user changed' notices. Runs until interrupted.",
    )
    worker.add_argument(
        "--loglevel",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="the worker's log level",
    )
    worker.set_defaults(func=_worker)

    features = sub.add_parser(
        "features",
        help="Feast repository commands",
        description="Apply feature_repo/definitions.py to the Feast "
        "registry of this environment (Redis online store).",
    )
    features.add_argument("action", choices=["apply"], help="register the definitions")
    features.set_defaults(func=_features)

    materialize = sub.add_parser(
        "materialize",
        help="fill the online store from the offline store (Feast materialize)",
        description="Fold the archived log into the Feast batch sources, then copy each "
        "entity's latest row stamped in [--start, --end] (or, with --incremental, since the "
        "previous run of each view) to the online store.",
    )
    materialize.add_argument("--end", type=time_arg, metavar="T", help="default: now")
    span = materialize.add_mutually_exclusive_group(required=True)
    span.add_argument("--start", type=time_arg, metavar="T", help="rows stamped at or after T")
    span.add_argument(
        "--incremental", action="store_true", help="since the previous run of each view"
    )
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
    archive.add_argument(
        "--flush-records",
        type=int,
        default=50_000,
        metavar="N",
        help="write a Parquet part after N records of a topic",
    )
    archive.add_argument(
        "--flush-seconds",
        type=float,
        default=10.0,
        metavar="T",
        help="or after T seconds, whichever comes first",
    )
    archive.set_defaults(func=_archive)

    drift = sub.add_parser(
        "drift",
        help="compare live interactions with a reference window; export drift scores",
        description="Every --every seconds, compare the newest archived interactions after "
        "the champion set's training window with the reference distributions saved with "
        "the set (action mix, item popularity, category mix, user activity; KS or "
        "Wasserstein, chi-squared or Jensen-Shannon by sample size) and serve the scores on "
        "STREAMREC_DRIFT_METRICS_PORT for Prometheus. With --reference-until, the reference "
        "is instead the --window-events archived interactions before that time. Needs the "
        "archiver running.",
    )
    drift.add_argument(
        "--reference-until",
        type=time_arg,
        metavar="TIME",
        help="compare with the archived window before TIME instead of the champion's "
        "saved reference",
    )
    drift.add_argument(
        "--window-events",
        type=int,
        default=5000,
        metavar="N",
        help="with --reference-until: interactions in each compared window",
    )
    drift.add_argument(
        "--every", type=float, default=60.0, metavar="SECONDS", help="time between comparisons"
    )
    drift.add_argument("--once", action="store_true", help="one comparison, then exit")
    drift.set_defaults(func=_drift)

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
        type=time_arg,
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
    backfill.add_argument(
        "--experiments",
        action="store_true",
        help="also wipe the experiment counters and fold them again from the whole log "
        "(with the worker stopped)",
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
