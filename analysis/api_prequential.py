"""``streamrec evaluate-api --prequential``: the prequential protocol through HTTP.

On a stack that replayed a prepared log up to ``T``, the events after ``T`` are sent in
event-time order with ``POST /events`` carrying their original event time; before each
eligible one (the user's first interaction with a catalogue item, the harness's rule in
``training.evaluation.prequential.eligible_events``) the check waits until the worker
folded everything the user did before it (the user's ``interaction_count`` on
``/cockpit/user``), asks ``GET /recommend`` for the top k, and scores NDCG@k and Hit@k of
the event's item. ``--events N`` stops after the first N eligible events.

The harness replays the same log in process over exactly the events scored here
(:func:`training.evaluation.prequential.replay`), with the arm the API serves without a
champion (the item-kNN with categories, ``serving.knn.SERVED_PARAMS``) beside the plain
kNN and 14-day popularity; the report puts the two figures side by side, with how often
the two lists put the item at the same rank. Where they differ, it is the item side: the
API re-reads item rows every ``item_cache_seconds`` and rebuilds the kNN's counts when
the stream's clock moves, where the harness folds every event at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from serving.knn import SERVED_PARAMS, KnnParams
from training.evaluation.prequential import (
    KNN,
    RECENT_POPULARITY,
    Arms,
    PrequentialConfig,
    eligible_events,
    ndcg,
    paired_tests,
    recent_popularity_arm,
    replay,
)
from training.evaluation.prequential_state import KNN_CATEGORIES, knn_arm


class HttpStack:
    """The running API: send one event, read one user's count, ask for one list."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        import httpx

        self._client = httpx.Client(base_url=url.rstrip("/"), timeout=timeout)

    def send(self, event: Any) -> None:
        body = {
            "user_id": str(event.user_id),
            "item_id": str(event.item_id),
            "action": str(getattr(event, "action", "view") or "view"),
            "event_time": int(event.event_time),
        }
        rating = getattr(event, "rating", None)
        if rating is not None and not pd.isna(rating):
            body["rating"] = float(rating)
        for _ in range(100):
            response = self._client.post("/events", json=body)
            if response.status_code != 429:  # past the ingest rate limit: wait, send again
                break
            time.sleep(float(response.headers.get("Retry-After", "0.2") or 0.2))
        if response.status_code != 202:
            raise RuntimeError(f"POST /events: {response.status_code} {response.text[:200]}")

    def interaction_count(self, user_id: str) -> int:
        response = self._client.get("/cockpit/user", params={"user_id": user_id})
        response.raise_for_status()
        return int(response.json().get("interaction_count") or 0)

    def recommend(self, user_id: str, k: int) -> tuple[list[str], str]:
        response = self._client.get("/recommend", params={"user_id": user_id, "k": k})
        if response.status_code != 200:
            raise RuntimeError(f"GET /recommend: {response.status_code} {response.text[:200]}")
        body = response.json()
        return [str(i["item_id"]) for i in body["items"]], str(body["model_version"])


def check_prequential(
    events: pd.DataFrame,
    until_ms: int,
    stack: HttpStack,
    *,
    item_ids: list[str],
    item_categories: dict[str, list[str]] | None = None,
    max_events: int | None = None,
    k: int = 10,
    fold_timeout: float = 10.0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Score the API over HTTP on the events after ``until_ms``, and the harness on the same."""
    frame = events.sort_values("event_time", kind="stable").reset_index(drop=True)
    eligible = eligible_events(frame, item_ids, until_ms)
    if max_events is not None:
        eligible = eligible[:max_events]
    if len(eligible) == 0:
        raise ValueError("no eligible event at or after --until")
    last = int(eligible[-1])
    to_score = set(eligible.tolist())
    counts = frame.groupby("user_id").cumcount().to_numpy()  # events of the user before
    records: list[dict[str, Any]] = []
    versions: dict[str, int] = {}
    waited: list[float] = []
    for position in range(int(np.searchsorted(frame["event_time"], until_ms)), last + 1):
        event = frame.iloc[position]
        if position in to_score:
            user = str(event.user_id)
            started = time.perf_counter()
            deadline = started + fold_timeout
            while stack.interaction_count(user) < counts[position]:
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"user {user}'s events were not folded in {fold_timeout}s")
                time.sleep(0.02)
            waited.append(time.perf_counter() - started)
            items, version = stack.recommend(user, k)
            versions[version] = versions.get(version, 0) + 1
            item = str(event.item_id)
            records.append(
                {
                    "event_id": str(event.event_id),
                    "user_id": user,
                    "http": items.index(item) if item in items else None,
                }
            )
            if progress is not None:
                progress(len(records), len(eligible))
        stack.send(event)

    # The harness on exactly these events: the same eligible rule, nothing sampled.
    config = PrequentialConfig(max_events=None, k=k)
    arms: dict[str, Any] = {
        KNN: knn_arm(k, KnnParams(config.knn_history, config.knn_decay)),
        RECENT_POPULARITY: recent_popularity_arm(k),
    }
    if item_categories:
        arms[KNN_CATEGORIES] = knn_arm(k, SERVED_PARAMS)
    harness, _ = replay(
        frame,
        item_ids,
        Arms(arms),
        cutoff_ms=until_ms,
        start_ms=until_ms,
        end_ms=int(frame["event_time"].iloc[last]) + 1,
        config=config,
        item_categories=item_categories,
    )
    by_id = {r["event_id"]: r for r in harness}
    served = KNN_CATEGORIES if item_categories else KNN
    rows = [(r, by_id[r["event_id"]]) for r in records if r["event_id"] in by_id]
    http = np.array([ndcg(r["http"], k) for r, _ in rows])
    figures: dict[str, Any] = {
        "HTTP (the running API)": {
            f"ndcg@{k}": float(http.mean()) if len(http) else 0.0,
            f"hit@{k}": float(np.mean([r["http"] is not None for r, _ in rows])) if rows else 0.0,
        }
    }
    for name in arms:
        values = np.array([ndcg(h[f"{name} live"], k) for _, h in rows])
        figures[f"harness: {name} live"] = {
            f"ndcg@{k}": float(values.mean()) if len(values) else 0.0,
            f"hit@{k}": float(np.mean([h[f"{name} live"] is not None for _, h in rows]))
            if rows
            else 0.0,
        }
    harness_served = np.array([ndcg(h[f"{served} live"], k) for _, h in rows])
    return {
        "until_ms": until_ms,
        "k": k,
        "n_events": len(records),
        "n_compared": len(rows),
        "n_users": len({r["user_id"] for r in records}),
        "model_versions": versions,
        "fold_wait_ms": {
            "median": float(np.median(waited) * 1000),
            "p95": float(np.percentile(waited, 95) * 1000),
        },
        "figures": figures,
        "served_arm": served,
        "same_rank": float(np.mean([r["http"] == h[f"{served} live"] for r, h in rows])),
        "paired_http_vs_harness": paired_tests(http - harness_served),
    }


def render_prequential(result: dict[str, Any]) -> str:
    k = result["k"]
    lines = [
        f"prequential through HTTP: {result['n_events']} events of {result['n_users']} users "
        f"after T; model_version: "
        + ", ".join(f"{v} x{n}" for v, n in result["model_versions"].items()),
        "",
        f"| answer | NDCG@{k} | Hit@{k} |",
        "|---|---|---|",
    ]
    for name, values in result["figures"].items():
        lines.append(f"| {name} | {values[f'ndcg@{k}']:.4f} | {values[f'hit@{k}']:.4f} |")
    p = result["paired_http_vs_harness"]["wilcoxon_p"]
    lines += [
        "",
        f"same rank as the harness's {result['served_arm']}: {result['same_rank']:.1%} of "
        f"{result['n_compared']} events; HTTP vs harness Wilcoxon p = "
        + ("–" if p is None else f"{p:.3g}"),
        f"wait for the worker's fold before a request: median "
        f"{result['fold_wait_ms']['median']:.0f} ms, p95 {result['fold_wait_ms']['p95']:.0f} ms",
    ]
    return "\n".join(lines)
