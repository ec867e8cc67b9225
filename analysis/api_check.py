"""Score the running API on what users did after a cutoff: the served cascade, not a copy.

The offline report scores models in-process. This check asks the real service: with the
log replayed up to ``T`` and a set trained with ``streamrec train --until T`` serving as
champion, every user with a later event gets ``GET /recommend?user_id=...&k=K`` and the
answer is scored against that user's events at or after ``T`` (the relevant items are the
same as the offline protocol's test target: items seen before ``T``, not already among the
user's pre-``T`` items). The baselines are scored on the same users in the same run:
popularity before ``T`` and recent popularity over the last 14 days before ``T``, both
masking the user's pre-``T`` items, which the API does only for the recent items it keeps.

``streamrec evaluate-api --source movielens-100k --until T`` prints the table and writes
``reports/api_check.json``.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from streamrec.paths import dataset_events
from training.data.split import SplitConfig, TimeSplit, load_events, time_split
from training.evaluation.baselines import popularity_scores, recent_popularity_scores
from training.evaluation.metrics import ranking_metrics, relevant_dense, top_k

KS = (10,)
RECENT_DAYS = 14.0

# user_id, k -> (item ids in rank order, model_version)
Recommender = Callable[[str, int], tuple[list[str], str]]


class ApiCheckError(RuntimeError):
    """The check cannot be run as asked (no users after T, the API refused, ...)."""


def split_at(events: pd.DataFrame, until_ms: int) -> TimeSplit:
    """The protocol's split with the training period ending exactly at ``until_ms``."""
    times = np.sort(events["event_time"].to_numpy(np.int64))
    before = int(np.searchsorted(times, until_ms, side="left"))
    if before == 0:
        raise ApiCheckError("no event before --until")
    if before == len(times):
        raise ApiCheckError("no event at or after --until: nothing to score")
    # Half an event past ``before`` so the quantile's int() cannot round down a row.
    fraction = (before + 0.5) / len(times)
    split = time_split(events, SplitConfig(train_fraction=fraction, validation_fraction=0))
    if split.train_end_ms != int(times[before]):  # the quantile lands on the first later time
        raise ApiCheckError(f"split boundary {split.train_end_ms} is not the first time >= T")
    return split


@dataclass(frozen=True)
class Scored:
    per_user: dict[str, np.ndarray]  # metric -> (U,) values, rows in target order

    def mean(self) -> dict[str, float]:
        return {name: float(values.mean()) for name, values in self.per_user.items()}


def _score_top(top: np.ndarray, relevant: np.ndarray) -> Scored:
    return Scored(ranking_metrics(top, relevant, KS))


def _baseline_top(
    split: TimeSplit, item_scores: np.ndarray, users: np.ndarray, k: int
) -> np.ndarray:
    scores = np.tile(item_scores.astype(np.float64), (len(users), 1))
    scores[split.train_matrix[users].toarray() > 0] = -np.inf
    return top_k(scores, k)


def check(
    events: pd.DataFrame,
    until_ms: int,
    recommend: Recommender,
    *,
    k: int = 10,
    max_users: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Ask ``recommend`` for every user with a relevant later event; score it and baselines."""
    split = split_at(events, until_ms)
    target = split.test
    rows = np.arange(len(target.users))
    if max_users is not None and len(rows) > max_users:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_users, replace=False))
    users = target.users[rows]
    if len(users) == 0:
        raise ApiCheckError("no user has a relevant event after --until")
    # One extra column that is never relevant: answers outside the candidates land there.
    relevant = relevant_dense(target.relevant, rows)
    relevant = np.concatenate([relevant, np.zeros((len(rows), 1), dtype=bool)], axis=1)
    outside = split.n_items

    top = np.full((len(users), k), outside, dtype=np.int64)
    versions: Counter[str] = Counter()
    short_lists = already_seen = 0
    for row, user in enumerate(users):
        items, version = recommend(str(split.user_ids[user]), k)
        versions[version] += 1
        short_lists += len(items) < k
        for rank, item in enumerate(items[:k]):
            top[row, rank] = split.item_index.get(item, outside)
        answered = top[row][top[row] < outside]
        already_seen += int(split.train_matrix[user, answered].sum()) if len(answered) else 0

    results = {"api": _score_top(top, relevant)}
    baselines = {
        "popularity (before T)": popularity_scores(split),
        f"recent popularity {RECENT_DAYS:g}d": recent_popularity_scores(split, RECENT_DAYS),
    }
    for name, item_scores in baselines.items():
        results[name] = _score_top(_baseline_top(split, item_scores, users, k), relevant)

    best = max(baselines, key=lambda name: results[name].mean()[f"ndcg@{k}"])
    is_new = users >= split.n_train_users
    slices = {
        name: {
            answer: float(scored.per_user[f"ndcg@{k}"][mask].mean()) if mask.any() else None
            for answer, scored in results.items()
        }
        for name, mask in (("new", is_new), ("returning", ~is_new))
    }
    return {
        "until_ms": until_ms,
        "k": k,
        "users": len(users),
        "users_with_later_events": len(target.users),
        "new_users": int(is_new.sum()),
        "candidates": split.n_items,
        "model_versions": dict(versions),
        "short_lists": short_lists,
        # Answers the user had already interacted with before T (never relevant).
        "already_seen_answers": already_seen,
        "metrics": {name: scored.mean() for name, scored in results.items()},
        f"ndcg@{k}_by_slice": slices,
        "best_baseline": best,
        "ratio_to_best": _ratio(results["api"], results[best], f"ndcg@{k}"),
        "paired": _paired(results["api"], results[best], f"ndcg@{k}"),
    }


def _ratio(api: Scored, baseline: Scored, metric: str) -> float | None:
    base = baseline.mean()[metric]
    return api.mean()[metric] / base if base > 0 else None


def _paired(api: Scored, baseline: Scored, metric: str) -> dict[str, float | None]:
    from scipy.stats import wilcoxon

    diff = api.per_user[metric] - baseline.per_user[metric]
    if not np.any(diff):
        return {"mean_delta": 0.0, "wilcoxon_p": None}
    return {"mean_delta": float(diff.mean()), "wilcoxon_p": float(wilcoxon(diff).pvalue)}


def http_recommender(url: str, timeout: float = 10.0) -> Recommender:
    import httpx

    client = httpx.Client(base_url=url.rstrip("/"), timeout=timeout)

    def recommend(user_id: str, k: int) -> tuple[list[str], str]:
        response = client.get("/recommend", params={"user_id": user_id, "k": k})
        if response.status_code != 200:
            raise ApiCheckError(
                f"GET /recommend for user {user_id!r}: {response.status_code} {response.text[:200]}"
            )
        body = response.json()
        return [item["item_id"] for item in body["items"]], str(body["model_version"])

    return recommend


def render(result: dict[str, Any]) -> str:
    k = result["k"]
    lines = [
        f"API check: {result['users']} users with events after T "
        f"({result['new_users']} new), {result['candidates']} candidate items",
        f"model_version: {', '.join(f'{v} x{n}' for v, n in result['model_versions'].items())}",
        f"answers the user had already interacted with before T: {result['already_seen_answers']}"
        f" of {result['users'] * k}",
        "",
        f"| answer | NDCG@{k} | Recall@{k} | HitRate@{k} |",
        "|---|---|---|---|",
    ]
    for name, values in result["metrics"].items():
        lines.append(
            f"| {name} | {values[f'ndcg@{k}']:.4f} | {values[f'recall@{k}']:.4f} "
            f"| {values[f'hit@{k}']:.4f} |"
        )
    lines += ["", f"| NDCG@{k} by user | " + " | ".join(result["metrics"]) + " |"]
    lines.append("|---" * (len(result["metrics"]) + 1) + "|")
    for name, values in result[f"ndcg@{k}_by_slice"].items():
        cells = ["–" if v is None else f"{v:.4f}" for v in values.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    ratio = result["ratio_to_best"]
    paired = result["paired"]
    p = paired["wilcoxon_p"]
    lines += [
        "",
        f"API / {result['best_baseline']}: {ratio:.3f}" if ratio is not None else "",
        f"mean per-user delta {paired['mean_delta']:+.4f}"
        + (f", Wilcoxon p = {p:.2g}" if p is not None else ""),
    ]
    return "\n".join(lines)


# -- the command line -------------------------------------------------------------------------


def api_check_command(args: Any, settings: Any) -> int:
    import logging

    from streamrec.times import parse_time_ms

    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per request
    path = dataset_events(settings.data_dir, args.source)
    if not path.exists():
        print(f"streamrec evaluate-api: no prepared log at {path}", file=sys.stderr)
        return 2
    url = args.url or f"http://127.0.0.1:{settings.api_port}"
    if getattr(args, "prequential", False):
        return _prequential_command(args, settings, path, url)
    try:
        result = check(
            load_events(path),
            parse_time_ms(args.until),
            http_recommender(url),
            k=args.k,
            max_users=args.users,
        )
    except (ApiCheckError, ValueError) as exc:
        print(f"streamrec evaluate-api: {exc}", file=sys.stderr)
        return 2
    return _report(args.out, result, render(result))


def _prequential_command(args: Any, settings: Any, path: Any, url: str) -> int:
    from analysis.api_prequential import HttpStack, check_prequential, render_prequential
    from streamrec.paths import dataset_items
    from streamrec.times import parse_time_ms
    from training.prequential_run import categories_of

    events = pd.read_parquet(path)
    items_path = dataset_items(settings.data_dir, args.source)
    items = pd.read_parquet(items_path) if items_path.exists() else None
    item_ids = sorted(
        set(events["item_id"].astype(str))
        | (set(items["item_id"].astype(str)) if items is not None else set())
    )
    try:
        result = check_prequential(
            events,
            parse_time_ms(args.until),
            HttpStack(url),
            item_ids=item_ids,
            item_categories=categories_of(items),
            max_events=args.events,
            k=args.k,
        )
    except (RuntimeError, ValueError) as exc:
        print(f"streamrec evaluate-api: {exc}", file=sys.stderr)
        return 2
    return _report(args.out, result, render_prequential(result))


def _report(out: Path, result: dict[str, Any], table: str) -> int:
    """Both checks' ending: the result as JSON at ``out``, the table on stdout."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(table)
    return 0
