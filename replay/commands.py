"""The ``data`` and ``replay`` commands (their parsers are in ``streamrec.cli.data``).

Each command function takes ``(args, settings)`` and returns an exit code: 0 done,
1 failed while running (e.g. undelivered events), 2 bad input (unknown source, missing
file), 130 interrupted. Expected errors become one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
from typing import Any

from replay.loading import LoadStats, SourceError
from streamrec.paths import dataset_events
from streamrec.settings import Settings

FETCHABLE = ("movielens-100k",)


def fetch_command(args: argparse.Namespace, settings: Settings) -> int:
    from replay.movielens import fetch_movielens_100k

    if args.name == "movielens-100k":
        try:
            folder = fetch_movielens_100k(settings.data_dir)
        except SourceError as exc:
            return _fail(f"data fetch: {exc}", 1)
        print(f"movielens-100k in {folder}")
        return 0
    if args.name == "amazon-books":
        return _fail(
            "data fetch: amazon-books is not downloadable here; get Books_5.json.gz (Amazon "
            "Review Data 2018) or a 2023 Books reviews file and run "
            "`streamrec data prepare amazon-books:PATH`",
            2,
        )
    if args.name == "synthetic":
        print("synthetic needs no fetch: `streamrec data prepare synthetic:users=...` makes it")
        return 0
    return _fail(f"data fetch: unknown dataset {args.name!r}; fetchable: {FETCHABLE[0]}", 2)


def prepare_command(args: argparse.Namespace, settings: Settings) -> int:
    from replay.prepare import prepare

    try:
        report = prepare(
            settings,
            args.source,
            min_rating=args.min_rating,
            since_ms=args.since,
            until_ms=args.until,
            k_core=args.k_core,
            dedupe=args.dedupe,
            progress=_LoadProgress(),
        )
    except SourceError as exc:
        return _fail(f"data prepare: {exc}", 2)
    except OSError as exc:
        return _fail(f"data prepare: {exc}", 1)
    print(report.summary())
    return 0


class _LoadProgress:
    """Prints the rows read so far to stderr, at most every few seconds."""

    def __init__(self, interval: float = 5.0) -> None:
        self._interval = interval
        self._last = time.monotonic()

    def __call__(self, stats: LoadStats) -> None:
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            print(
                f"  read {stats.rows_read:,} rows ({stats.malformed:,} malformed) ...",
                file=sys.stderr,
                flush=True,
            )


def replay_command(args: argparse.Namespace, settings: Settings) -> int:
    from confluent_kafka import KafkaException

    from replay.kafka_sink import KafkaSink
    from replay.progress import ProgressLine
    from replay.replayer import Replayer, ReplayError
    from streams.events import Topics
    from streams.producer import DeliveryFailed
    from streams.topics import ensure_topics

    name = args.source.partition(":")[0].strip()
    path = dataset_events(settings.data_dir, name)
    if not path.is_file():
        return _fail(
            f"replay: {name!r} is not prepared ({path} does not exist); run "
            f"`streamrec data prepare {name}` first",
            2,
        )
    topics = Topics(settings.topic_prefix)
    if not _reachable(settings.bootstrap_servers):
        return _fail(
            f"replay: cannot connect to Kafka at {settings.bootstrap_servers}; is it running? "
            "(`streamrec services up`)",
            1,
        )
    try:
        ensure_topics(
            settings.bootstrap_servers,
            topics,
            settings.topic_partitions,
            timeout=10,
            replication_factor=settings.replication_factor,
            security=settings.kafka_security(),
        )
    except KafkaException as exc:
        return _fail(
            f"replay: cannot reach Kafka at {settings.bootstrap_servers} ({exc}); is it "
            "running? (`streamrec services up`)",
            1,
        )
    progress = ProgressLine()
    sink = KafkaSink(settings.bootstrap_servers, topics.interactions, **settings.kafka_security())
    try:
        replayer = Replayer(
            path,
            sink,
            speed=args.speed,
            since_ms=args.since,
            until_ms=args.until,
            rebase_now=args.rebase_now,
            progress=progress,
        )
        code, status = _run_interruptibly(replayer)
    except ReplayError as exc:
        return _fail(f"replay: {exc}", 1)
    finally:
        try:
            sink.close()
        except DeliveryFailed as exc:
            print(f"replay: {exc}", file=sys.stderr)
    progress.finish(status)
    print(
        f"replayed {status.events_sent:,} events of {name} to {topics.interactions} "
        f"({status.rate:,.0f} events/s)"
    )
    return code


def _reachable(bootstrap_servers: str, timeout: float = 3.0) -> bool:
    """A TCP connect to any bootstrap server: a fast, quiet check before the Kafka client
    (which would retry for its whole timeout and log every attempt)."""
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition("://")[2].rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
                return True
        except (OSError, ValueError):
            continue
    return False


def _run_interruptibly(replayer: Any) -> tuple[int, Any]:
    """Run in a thread so Ctrl-C in the main thread can stop it cleanly (flushing)."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["status"] = replayer.run()
        except Exception as exc:  # handed to the main thread, which raises it again
            outcome["error"] = exc

    worker = threading.Thread(target=target, name="replayer")
    worker.start()
    code = 0
    try:
        while worker.is_alive():
            worker.join(0.2)
    except KeyboardInterrupt:
        replayer.stop()
        worker.join()
        code = 130
    if "error" in outcome:
        raise outcome["error"]
    return code, outcome.get("status", replayer.status())


def _fail(message: str, code: int) -> int:
    print(message, file=sys.stderr)
    return code
