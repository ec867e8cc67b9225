"""``streamrec train``, ``retrain`` and ``evaluate-api``: fit, register and check the cascade."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from streamrec.settings import Settings


def _train(args: argparse.Namespace, settings: Settings) -> int:
    from training.pipeline import train_command

    return train_command(args, settings)


def _retrain(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import UTC, datetime

    from training.pipeline import train_command

    args.until = datetime.now(tz=UTC).isoformat()
    return train_command(args, settings)


def _evaluate_api(args: argparse.Namespace, settings: Settings) -> int:
    from analysis.api_check import api_check_command

    return api_check_command(args, settings)


def _evaluate_prequential(args: argparse.Namespace, settings: Settings) -> int:
    from training.prequential_run import prequential_command

    return prequential_command(args, settings)


def register(sub: Any) -> None:
    train = sub.add_parser(
        "train",
        help="train LightGCN -> DIN -> RankNet from the archived log, evaluate, register",
        description="Read the archived event log (STREAMREC_DATA_DIR/archive), build "
        "point-in-time training sets, train the three stages through Ray Train "
        "(STREAMREC_RAY_ADDRESS, or a local Ray), evaluate against the baselines and in a "
        "prequential replay, log everything to MLflow (STREAMREC_MLFLOW_TRACKING_URI, or "
        "SQLite under the state dir), register the set and promote it to 'champion' only "
        "if its live cascade beats every live baseline on the validation period replayed "
        "prequentially (p < 0.05) and the champion set.",
    )
    train.add_argument("--until", metavar="T", help="train only on events before T")
    _training_options(train)
    train.set_defaults(func=_train)

    retrain = sub.add_parser(
        "retrain",
        help="train on everything archived until now; the gate decides (what the monitor runs)",
        description="`streamrec train --until now`: the same path, options and registry gate. "
        "`streamrec monitor` runs it when drift or degradation persists.",
    )
    _training_options(retrain)
    retrain.set_defaults(func=_retrain)

    parser = sub.add_parser(
        "evaluate-api",
        help="score the running API's /recommend on users' events after --until",
        description="Ask the running API for every user with events at or after --until in a "
        "prepared log and score the lists on those later events, beside popularity baselines.",
    )
    parser.add_argument("--until", required=True, metavar="T", help="the training cutoff")
    parser.add_argument(
        "--source", default="movielens-100k", help="the prepared log whose later events count"
    )
    parser.add_argument("--url", help="the API (default: http://127.0.0.1:STREAMREC_API_PORT)")
    parser.add_argument("--k", type=int, default=10, help="list length asked for and scored")
    parser.add_argument("--users", type=int, metavar="N", help="score a sample of N users")
    parser.add_argument(
        "--prequential",
        action="store_true",
        help="send the events after --until with POST /events (their original event time) "
        "and ask GET /recommend before each user's first interaction with an item, scored "
        "as the prequential harness scores it, beside the harness on the same events",
    )
    parser.add_argument(
        "--events",
        type=int,
        metavar="N",
        help="with --prequential: stop after the first N eligible events",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("reports/api_check.json"),
        help="where the JSON report is written",
    )
    parser.set_defaults(func=_evaluate_api)

    parser = sub.add_parser(
        "evaluate-prequential",
        help="train on a prepared log and score the cascade test-then-learn beside baselines",
        description="Train the three stages on a prepared log (no Ray, no MLflow), then "
        "replay the test period event by event: before each user's first interaction with "
        "an item, the cascade (through the API's own one-request function) and the "
        "baselines (popularity, 14-day popularity, live item-kNN, item-kNN tuned on the "
        "validation period), live and frozen at the cutoff, recommend k items; scored by "
        "NDCG@10 and Hit@10 per slice (users new at the cutoff, returning) with paired tests.",
    )
    parser.add_argument("--log", default="movielens-100k", help="the prepared dataset's name")
    parser.add_argument(
        "--events", type=int, default=5000, metavar="N", help="test events scored (0: all)"
    )
    parser.add_argument("--seed", type=int, default=0, help="training and sampling seed")
    parser.add_argument("--hyper", metavar="JSON", help="hyper-parameter overrides")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="processes the replays share their scored events among",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("reports"), help="where prequential.json/.md go"
    )
    parser.set_defaults(func=_evaluate_prequential)


def _training_options(train: Any) -> None:
    train.add_argument("--workers", type=int, default=1, metavar="N", help="Ray Train workers")
    train.add_argument(
        "--seeds", type=int, default=1, metavar="S", help="seeds (mean and spread reported)"
    )
    train.add_argument(
        "--report-dir",
        type=Path,
        default=Path("reports"),
        metavar="DIR",
        help="where eval.json and eval.md are written",
    )
    train.add_argument(
        "--hyper",
        metavar="JSON",
        help='hyper-parameter overrides, e.g. \'{"lightgcn": {"epochs": 5}}\'',
    )
    train.add_argument(
        "--streaming-events",
        type=int,
        default=5000,
        metavar="N",
        help="events scored by the prequential evaluation in the validation and the test "
        "period each (0 skips it, and the gate falls back to static validation NDCG@10)",
    )
    train.add_argument(
        "--replay-processes",
        type=int,
        metavar="N",
        help="processes the prequential replays share their scored events among "
        "(default: the machine's cores, at most 4; each holds a copy of the folded log)",
    )
    train.add_argument("--items", type=Path, metavar="PATH", help="item catalogue (Parquet)")
    train.add_argument("--no-bpr", action="store_true", help="skip the BPR-MF baseline")
    train.add_argument(
        "--train-fraction",
        type=float,
        default=0.8,
        metavar="F",
        help="share of the log (by time) the stages are fitted on",
    )
    train.add_argument(
        "--validation-fraction",
        type=float,
        default=0.1,
        metavar="F",
        help="share after the training period that chooses weights and gates the set; "
        "the rest is the test period",
    )
