"""``streamrec canary``, ``streamrec promote`` and ``streamrec ope``: the online experiments
from the command line (issue 16). The admin API manages experiments; these are the steps
of a release and the offline estimate, which read Redis, MLflow and the log directly."""

from __future__ import annotations

import argparse
import json
from typing import Any

from streamrec.settings import Settings


def _store(settings: Settings) -> Any:
    from streamrec.infra.experiments import RedisExperimentStore

    redis_url = settings.redis_connection_url
    if redis_url is None:
        raise SystemExit("experiments live in Redis; set STREAMREC_REDIS_URL")
    return RedisExperimentStore(redis_url, settings.topic_prefix)


def _canary(args: argparse.Namespace, settings: Settings) -> int:
    """Start the canary: ``challenger`` gets ``share`` of the users, ``champion`` the rest."""
    from api.experiments.definitions import ExperimentSpec
    from training.canary import canary_definition, start_canary

    try:
        definition = canary_definition(args.share, args.experiment)
        spec = ExperimentSpec.model_validate(definition)
    except ValueError as exc:
        raise SystemExit(f"streamrec canary: {exc}") from None
    start_canary(_store(settings), definition)  # as the monitor stores it
    print(json.dumps(spec.model_dump()))
    return 0


def _promote(args: argparse.Namespace, settings: Settings) -> int:
    """Decide the canary; on a decision, move the aliases and stop the experiment."""
    from mlflow import MlflowClient

    from training.canary import NoCanary, check_canary

    try:
        result = check_canary(
            _store(settings),
            MlflowClient(tracking_uri=settings.mlflow_uri),
            name=args.experiment,
            margin=args.margin,
            min_lists=args.min_lists,
            alpha=args.alpha,
        )
    except NoCanary as exc:
        raise SystemExit(str(exc)) from None
    if result is None:
        raise SystemExit(f"no experiment {args.experiment!r} runs")
    print(
        json.dumps(
            {
                "action": result.decision.action,
                "reason": result.decision.reason,
                "p_value": result.decision.p_value,
                "challenger_set": result.set_id,
                "challenger_versions": result.versions,
            }
        )
    )
    return 0


def _ope(args: argparse.Namespace, settings: Settings) -> int:
    """IPS and SNIPS of a candidate ranking from the logged lists of an exploring experiment."""
    from collections import Counter

    from analysis.ope import LoggedList, estimate, ranking_by_count, static_candidate
    from streams.backfill import read_log
    from streams.events import (
        Click,
        EventRejected,
        Interaction,
        RecommendationServed,
        Topics,
        decode,
    )

    topics = Topics(settings.topic_prefix)
    served: dict[str, RecommendationServed] = {}
    clicks: dict[str, set[str]] = {}
    popularity: Counter[str] = Counter()
    names = [topics.recommendations, topics.clicks, topics.interactions]
    for batch in read_log(settings.bootstrap_servers, names, security=settings.kafka_security()):
        for record in batch:
            topic, value = record[0], record[-1]
            try:
                event = decode(topics.event_type(topic), value)
            except EventRejected:
                continue  # the dead-letter topic has it already (the worker's)
            if isinstance(event, RecommendationServed) and event.experiment == args.experiment:
                if all(item.propensity is not None for item in event.items):
                    served.setdefault(event.request_id, event)
            elif isinstance(event, Click):
                clicks.setdefault(event.request_id, set()).add(event.item_id)
            elif isinstance(event, Interaction):
                popularity[event.item_id] += 1
    logged = [
        LoggedList(
            s.user_id,
            tuple(i.item_id for i in s.items),
            tuple(float(i.propensity or 0.0) for i in s.items),
            frozenset(clicks.get(s.request_id, set()) & {i.item_id for i in s.items}),
        )
        for s in served.values()
    ]
    if args.candidate == "popularity":
        ranking = ranking_by_count(popularity)
    else:
        with open(args.candidate) as ranking_file:
            ranking = [str(item) for item in json.load(ranking_file)]
    result = estimate(logged, static_candidate(ranking[: args.k]), args.k)
    logged_value = sum(len(s.clicked) for s in logged) / len(logged)
    print(
        json.dumps(
            {
                "lists": result.lists,
                "matched_slots": result.matched_slots,
                "logged_clicks_per_list": logged_value,
                "ips": vars(result.ips),
                "snips": vars(result.snips),
                "dr": vars(result.dr),
            }
        )
    )
    return 0


def register(sub: Any) -> None:
    canary = sub.add_parser(
        "canary",
        help="start a canary: the challenger set gets a share of the users",
        description="Store the A/B experiment champion vs challenger in Redis; every API "
        "process applies it within a second.",
    )
    canary.add_argument("--experiment", default="canary", help="the experiment's name")
    canary.add_argument("--share", type=float, default=0.1, help="the challenger's share")
    canary.set_defaults(func=_canary)

    promote = sub.add_parser(
        "promote",
        help="end a canary: promote the challenger if not worse by a margin, else roll back",
        description="A fixed-horizon non-inferiority test of the challenger's CTR (see "
        "training.registry.decide_canary). Before the horizon it only waits; at it, "
        "`champion` moves to the challenger set or the set is rolled back, the decision "
        "is tagged on its MLflow versions, and the experiment stops.",
    )
    promote.add_argument("--experiment", default="canary", help="the canary experiment's name")
    promote.add_argument("--margin", type=float, default=0.01, help="absolute CTR margin")
    promote.add_argument("--min-lists", type=int, default=1000, help="lists per side first")
    promote.add_argument("--alpha", type=float, default=0.05, help="the test's level")
    promote.set_defaults(func=_promote)

    ope = sub.add_parser(
        "ope",
        help="estimate a candidate ranking's clicks per list from an exploring experiment",
        description="IPS, SNIPS and doubly robust with bootstrap intervals (analysis.ope) "
        "over the logged lists of EXPERIMENT that carry propensities (an experiment with "
        "exploration > 0).",
    )
    ope.add_argument("--experiment", required=True, help="an experiment with exploration > 0")
    ope.add_argument(
        "--candidate",
        default="popularity",
        help="`popularity` (by interactions in the log) or a JSON file with a ranked item list",
    )
    ope.add_argument("--k", type=int, default=10, help="slots per list to estimate")
    ope.set_defaults(func=_ope)
