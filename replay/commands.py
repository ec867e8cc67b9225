"""The ``data`` and ``replay`` subcommands, registered on the CLI's argparse subparsers.

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
from replay.log import events_path
from replay.sources import SOURCE_NAMES
from streamrec.settings import Settings
from streamrec.times import parse_time_ms

FETCHABLE = ("movielens-100k",)


def _time_arg(text: str) -> int:
    try:
        return parse_time_ms(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _speed_arg(text: str) -> float | None:
    if text.strip().lower() == "max":
        return None
    try:
        speed = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor 'max'") from exc
    if not speed > 0 or speed == float("inf"):
        raise argparse.ArgumentTypeError(f"speed must be a positive number, got {text}")
    return speed


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_time_range(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--since",
        type=_time_arg,
        metavar="T",
        help="only events at or after T (epoch seconds or ISO 8601, e.g. 1998-01-01T00:00:00Z)",
    )
    parser.add_argument(
        "--until", type=_time_arg, metavar="T", help="only events before T (same formats)"
    )


def add_data_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``data fetch NAME`` and ``data prepare SOURCE``."""
    data = subparsers.add_parser(
        "data",
        help="fetch datasets and prepare the Parquet event log",
        description="Fetch a dataset, then prepare it into the canonical event log "
        "(<data_dir>/log/<name>/events.parquet) that `streamrec replay` reads.",
    )
    actions = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    fetch = actions.add_parser(
        "fetch",
        help="download a dataset into <data_dir>/raw",
        description="Download a dataset. movielens-100k comes from PyPI (the copy inside "
        "the RecBole wheel), so only package-registry access is needed.",
    )
    fetch.add_argument("name", metavar="NAME", help=f"dataset: {', '.join(SOURCE_NAMES)}")
    fetch.set_defaults(func=fetch_command)

    prepare = actions.add_parser(
        "prepare",
        help="clean a dataset into the time-ordered event log",
        description="Load SOURCE, clean it and write <data_dir>/log/<name>/events.parquet "
        "(sorted by event time) and items.parquet. SOURCE is movielens-100k[:PATH], "
        "amazon-books:PATH[,meta=META_PATH] (2018 JSON lines, 2023 JSONL or CSV; gzip or "
        "plain) or synthetic:users=N,items=M,events=E,seed=S.",
    )
    prepare.add_argument("source", metavar="SOURCE", help="what to prepare (see above)")
    prepare.add_argument(
        "--min-rating", type=float, metavar="R", help="drop ratings below R (unrated events stay)"
    )
    _add_time_range(prepare)
    prepare.add_argument(
        "--k-core",
        type=_positive_int,
        metavar="K",
        help="repeatedly drop users and items with fewer than K interactions",
    )
    prepare.add_argument(
        "--no-dedupe",
        dest="dedupe",
        action="store_false",
        help="keep repeated (user, item, event_time) rows",
    )
    prepare.set_defaults(func=prepare_command)
    return data


def add_replay_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``replay SOURCE --speed X|max``."""
    replay = subparsers.add_parser(
        "replay",
        help="replay a prepared event log into Kafka",
        description="Produce the events of a prepared log (see `streamrec data prepare`) to "
        "the interactions topic, in event-time order, at SPEED times real time.",
    )
    replay.add_argument(
        "source", metavar="SOURCE", help="prepared dataset name, e.g. movielens-100k"
    )
    replay.add_argument(
        "--speed",
        type=_speed_arg,
        default=None,
        metavar="X|max",
        help="X times real time in event time, or max for as fast as possible (default max)",
    )
    _add_time_range(replay)
    replay.add_argument(
        "--rebase-now",
        action="store_true",
        help="shift event times so the first replayed event happens now (gaps kept)",
    )
    replay.set_defaults(func=replay_command)
    return replay


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
    from streams.producer import DeliveryFailed, EventProducer
    from streams.topics import ensure_topics

    name = args.source.partition(":")[0].strip()
    path = events_path(settings.data_dir, name)
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
        ensure_topics(settings.bootstrap_servers, topics, settings.topic_partitions, timeout=10)
    except KafkaException as exc:
        return _fail(
            f"replay: cannot reach Kafka at {settings.bootstrap_servers} ({exc}); is it "
            "running? (`streamrec services up`)",
            1,
        )
    progress = ProgressLine()
    producer = EventProducer(settings.bootstrap_servers, topics)
    try:
        replayer = Replayer(
            path,
            KafkaSink(producer),
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
            producer.close()
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
