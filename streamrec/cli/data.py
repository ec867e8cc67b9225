"""``streamrec data fetch|prepare`` and ``streamrec replay``: datasets into the log."""

from __future__ import annotations

import argparse
from typing import Any

from streamrec.cli.args import add_time_range, positive_int, speed_arg
from streamrec.settings import Settings


def _fetch(args: argparse.Namespace, settings: Settings) -> int:
    from replay.commands import fetch_command

    return fetch_command(args, settings)


def _prepare(args: argparse.Namespace, settings: Settings) -> int:
    from replay.commands import prepare_command

    return prepare_command(args, settings)


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from replay.commands import replay_command

    return replay_command(args, settings)


def add_data_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``data fetch NAME`` and ``data prepare SOURCE``."""
    data = subparsers.add_parser(
        "data",
        help="fetch datasets and prepare the Parquet event log",
        description="Fetch a dataset, then prepare it into the canonical event log "
        "(<data_dir>/datasets/<name>/events.parquet) that `streamrec replay` reads.",
    )
    actions = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    fetch = actions.add_parser(
        "fetch",
        help="download a dataset into <data_dir>/raw",
        description="Download a dataset. movielens-100k comes from PyPI (the copy inside "
        "the RecBole wheel), so only package-registry access is needed.",
    )
    fetch.add_argument("name", metavar="NAME", help="the dataset to fetch: movielens-100k")
    fetch.set_defaults(func=_fetch)

    prepare = actions.add_parser(
        "prepare",
        help="clean a dataset into the time-ordered event log",
        description="Load SOURCE, clean it and write <data_dir>/datasets/<name>/events.parquet "
        "(sorted by event time) and items.parquet. SOURCE is movielens-100k[:PATH], "
        "amazon-books:PATH[,meta=META_PATH] (2018 JSON lines, 2023 JSONL or CSV; gzip or "
        "plain) or synthetic:users=N,items=M,events=E,seed=S.",
    )
    prepare.add_argument("source", metavar="SOURCE", help="what to prepare (see above)")
    prepare.add_argument(
        "--min-rating", type=float, metavar="R", help="drop ratings below R (unrated events stay)"
    )
    add_time_range(prepare)
    prepare.add_argument(
        "--k-core",
        type=positive_int,
        metavar="K",
        help="repeatedly drop users and items with fewer than K interactions",
    )
    prepare.add_argument(
        "--no-dedupe",
        dest="dedupe",
        action="store_false",
        help="keep repeated (user, item, event_time) rows",
    )
    prepare.set_defaults(func=_prepare)
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
        type=speed_arg,
        default=None,
        metavar="X|max",
        help="X times real time in event time, or max for as fast as possible (default max)",
    )
    add_time_range(replay)
    replay.add_argument(
        "--rebase-now",
        action="store_true",
        help="shift event times so the first replayed event happens now (gaps kept)",
    )
    replay.set_defaults(func=_replay)
    return replay
