"""Streaming evaluation: replay the held-out period event by event, test-then-learn.

Before each evaluated event (user u, item i, time t) the cascade recommends k items for u
twice, with the same models:

- **live**: features as they stood at that moment. The whole log before t (training,
  validation and the test events already replayed) is folded with the stream worker's own
  functions (``streams.folding``: ``UserState``/``fold_interaction`` for the user's recent
  items, ``ItemDelta``/``fold_item`` for item counts and the trend score), and context
  features come from ``models.context`` at ``now = t``, as the API computes them;
- **frozen**: the features of the training cutoff: the same folding over events before the
  cutoff only, context computed at the cutoff. This is what serving would answer if the
  online store had stopped being updated when the models were trained.

The event is then folded ("learn"; the models themselves never change). An event is
scored when it is the user's first interaction with an item of the models' vocabulary:
repeats cannot be recommended (seen items are masked), and items outside the vocabulary
cannot be ranked at all. Each arm masks the seen items it knows of (live: everything the
user did before t; frozen: before the cutoff). Events of one millisecond are evaluated
before any of them is folded, so none sees another.

A bounded number of events is sampled deterministically (``max_events``, ``seed``) so a
run takes about a minute. Reported: HitRate@k (= Recall@k with one relevant item) and
NDCG@k of both arms, their difference, and paired tests over events (Wilcoxon signed-rank
on the NDCG differences, paired t-test).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats

from models import context
from models.cascade import CascadeConfig, CascadeModels, CascadeRequest, ItemTable, recommend
from streams.events import Click, Interaction
from streams.folding import (
    TREND_HALF_LIFE_MS,
    ItemDelta,
    ItemState,
    UserState,
    fold_interaction,
    fold_item,
)


@dataclass(frozen=True)
class StreamingConfig:
    max_events: int | None = 1000  # events scored, sampled uniformly; None scores all
    k: int = 10
    seed: int = 0
    keep: int = 50  # recent items kept per user: the worker's recent_items_max


@dataclass
class ServingModels:
    """A trained cascade and the index it speaks, as serving loads it."""

    models: CascadeModels
    config: CascadeConfig
    item_ids: Sequence[str]  # item index -> id
    user_ids: Sequence[str]  # user index -> id
    n_trained_users: int  # users 0 .. n-1 have a trained embedding row
    categories: torch.Tensor | None = None  # (I,) long, for the diversity rule
    trend_half_life_ms: int = TREND_HALF_LIFE_MS


class _FeatureState:
    """The fold of a log prefix: per user the worker's UserState plus every item seen,
    per vocabulary item the raw values the online store holds."""

    def __init__(self, item_index: dict[str, int], keep: int) -> None:
        self.item_index = item_index
        self.keep = keep
        self.users: dict[str, UserState] = {}
        self.seen: dict[str, set[int]] = {}
        self.items: dict[str, ItemState] = {}
        n = len(item_index)
        self.trend = np.zeros(n, np.float64)
        self.last = np.zeros(n, np.int64)
        self.clicks = np.zeros(n, np.int64)

    def fold(self, event: Interaction | Click) -> None:
        if isinstance(event, Interaction):
            user = self.users.setdefault(event.user_id, UserState())
            if not fold_interaction(user, event, self.keep):
                return  # a repeated event id: the worker does not count it twice
            index = self.item_index.get(event.item_id)
            if index is not None:
                self.seen.setdefault(event.user_id, set()).add(index)
        delta = ItemDelta(event.item_id)
        delta.add(event)
        item = self.items.setdefault(event.item_id, ItemState())
        fold_item(item, delta)
        index = self.item_index.get(event.item_id)
        if index is not None:
            self.trend[index] = item.trend_score
            self.last[index] = item.last_event_time
            self.clicks[index] = item.click_count

    def item_table(
        self, now_ms: int, half_life_ms: int, categories: torch.Tensor | None
    ) -> ItemTable:
        last = torch.from_numpy(self.last.copy())
        clicks = torch.from_numpy(self.clicks.copy())
        return ItemTable(
            popularity=context.popularity(
                torch.from_numpy(self.trend.copy()), last, now_ms, half_life_ms
            ),
            recency=context.recency(last, now_ms),
            ctr=context.ctr(clicks, torch.zeros_like(clicks)),  # no impression counts yet
            categories=categories,
        )

    def request(self, user_id: str, user_index: int | None, now_ms: int, k: int) -> CascadeRequest:
        state = self.users.get(user_id) or UserState()
        recent = [self.item_index[i] for i in state.items if i in self.item_index]
        seen = sorted(self.seen.get(user_id, ()))
        user_context = context.user_context(
            torch.tensor(state.interaction_count), torch.tensor(state.last_event_time), now_ms
        )
        return CascadeRequest(
            recent_items=torch.tensor(recent, dtype=torch.long),
            seen_items=torch.tensor(seen, dtype=torch.long),
            user_index=user_index,
            user_context=user_context.float(),
            k=k,
        )


def _events(interactions: pd.DataFrame, clicks: pd.DataFrame | None) -> list[Interaction | Click]:
    """Interactions and clicks in event-time order (interactions first on ties)."""
    rows: list[tuple[int, int, int, Interaction | Click]] = []
    for n, row in enumerate(interactions.itertuples(index=False)):
        event = Interaction.model_construct(
            event_id=str(row.event_id),
            event_time=int(row.event_time),
            user_id=str(row.user_id),
            item_id=str(row.item_id),
            action=getattr(row, "action", "view"),
        )
        rows.append((event.event_time, 0, n, event))
    if clicks is not None:
        for n, row in enumerate(clicks.itertuples(index=False)):
            click = Click.model_construct(
                event_id=str(row.event_id),
                event_time=int(row.event_time),
                user_id=str(row.user_id),
                request_id=str(row.request_id),
                item_id=str(row.item_id),
                rank=int(row.rank),
            )
            rows.append((click.event_time, 1, n, click))
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    return [r[3] for r in rows]


def eligible_events(
    interactions: pd.DataFrame, item_ids: Sequence[str], start_ms: int, end_ms: int | None = None
) -> np.ndarray:
    """Row positions (in ``interactions``' order) of events that can be scored: in
    ``[start_ms, end_ms)``, on a vocabulary item, the user's first interaction with it."""
    frame = interactions.reset_index(drop=True)
    order = np.argsort(frame["event_time"].to_numpy(np.int64), kind="stable")
    ordered = frame.iloc[order]
    first = ~ordered.duplicated(subset=["user_id", "item_id"], keep="first").to_numpy()
    times = ordered["event_time"].to_numpy(np.int64)
    vocab = set(map(str, item_ids))
    in_vocab = ordered["item_id"].astype(str).isin(vocab).to_numpy()
    keep = first & in_vocab & (times >= start_ms)
    if end_ms is not None:
        keep &= times < end_ms
    return np.sort(order[keep])


def _ndcg(rank: int | None, k: int) -> float:
    return 0.0 if rank is None or rank >= k else float(1.0 / np.log2(rank + 2))


def _rank_of(item: int, result_items: torch.Tensor) -> int | None:
    hits = (result_items == item).nonzero()
    return int(hits[0, 0]) if hits.numel() else None


def paired_tests(differences: np.ndarray) -> dict[str, Any]:
    """Wilcoxon signed-rank (zero differences dropped) and a paired t-test, two-sided."""
    out: dict[str, Any] = {
        "n": int(len(differences)),
        "n_nonzero": int((differences != 0).sum()),
        "wilcoxon_p": None,
        "ttest_p": None,
    }
    nonzero = differences[differences != 0]
    if len(nonzero) >= 2:
        out["wilcoxon_p"] = float(stats.wilcoxon(nonzero, alternative="two-sided").pvalue)
    if len(differences) >= 2 and np.std(differences) > 0:
        out["ttest_p"] = float(stats.ttest_1samp(differences, 0.0).pvalue)
    return out


def streaming_evaluation(
    serving: ServingModels,
    interactions: pd.DataFrame,
    *,
    cutoff_ms: int,
    start_ms: int,
    end_ms: int | None = None,
    clicks: pd.DataFrame | None = None,
    config: StreamingConfig | None = None,
    with_events: bool = False,
) -> dict[str, Any]:
    """Live vs frozen features on the events of ``[start_ms, end_ms)`` (see the module doc).

    ``interactions`` is the archived log (``event_id, event_time, user_id, item_id``,
    optionally ``action``) from the beginning, so the live state can be folded up to each
    event; ``cutoff_ms`` is the training cutoff (``start_ms >= cutoff_ms``).
    """
    config = config or StreamingConfig()
    if start_ms < cutoff_ms:
        raise ValueError(f"start_ms ({start_ms}) is before the training cutoff ({cutoff_ms})")
    frame = interactions.reset_index(drop=True)
    item_index = {str(item): n for n, item in enumerate(serving.item_ids)}
    user_index = {str(user): n for n, user in enumerate(serving.user_ids)}
    eligible = eligible_events(frame, serving.item_ids, start_ms, end_ms)
    n_eligible = len(eligible)
    if config.max_events is not None and len(eligible) > config.max_events:
        rng = np.random.default_rng(config.seed)
        eligible = np.sort(rng.choice(eligible, size=config.max_events, replace=False))
    scored_ids = set(frame["event_id"].iloc[eligible].astype(str))

    live = _FeatureState(item_index, config.keep)
    frozen = _FeatureState(item_index, config.keep)
    frozen_table: ItemTable | None = None
    records: list[dict[str, Any]] = []
    events = _events(frame, clicks)
    position = 0
    while position < len(events):
        now = events[position].event_time
        group_end = position
        while group_end < len(events) and events[group_end].event_time == now:
            group_end += 1
        group = events[position:group_end]
        if now >= cutoff_ms and frozen_table is None:
            frozen_table = frozen.item_table(
                cutoff_ms, serving.trend_half_life_ms, serving.categories
            )
        if end_ms is not None and now >= end_ms:
            break
        to_score = [e for e in group if isinstance(e, Interaction) and e.event_id in scored_ids]
        if to_score:
            assert frozen_table is not None  # start_ms >= cutoff_ms
            live_table = live.item_table(now, serving.trend_half_life_ms, serving.categories)
            for scored in to_score:
                records.append(
                    _score(
                        serving,
                        scored,
                        live,
                        live_table,
                        frozen,
                        frozen_table,
                        user_index,
                        cutoff_ms,
                        config.k,
                    )
                )
                scored_ids.discard(scored.event_id)  # a repeated event id is scored once
        for event in group:
            live.fold(event)
            if now < cutoff_ms:
                frozen.fold(event)
        position = group_end
    return _summary(records, n_eligible, config, cutoff_ms, start_ms, with_events)


def _score(
    serving: ServingModels,
    event: Interaction,
    live: _FeatureState,
    live_table: ItemTable,
    frozen: _FeatureState,
    frozen_table: ItemTable,
    user_index: dict[str, int],
    cutoff_ms: int,
    k: int,
) -> dict[str, Any]:
    index = user_index.get(event.user_id)
    trained = index if index is not None and index < serving.n_trained_users else None
    item = live.item_index[event.item_id]
    live_result = recommend(
        serving.models,
        live_table,
        live.request(event.user_id, trained, event.event_time, k),
        serving.config,
    )
    frozen_result = recommend(
        serving.models,
        frozen_table,
        frozen.request(event.user_id, trained, cutoff_ms, k),
        serving.config,
    )
    return {
        "event_id": event.event_id,
        "user_id": event.user_id,
        "item_id": event.item_id,
        "event_time": event.event_time,
        "trained_user": trained is not None,
        "live_rank": _rank_of(item, live_result.items),
        "frozen_rank": _rank_of(item, frozen_result.items),
    }


def _arm(ranks: list[int | None], k: int) -> dict[str, float | None]:
    if not ranks:
        return {f"ndcg@{k}": None, f"recall@{k}": None}
    return {
        f"ndcg@{k}": float(np.mean([_ndcg(r, k) for r in ranks])),
        f"recall@{k}": float(np.mean([r is not None and r < k for r in ranks])),
    }


def _compare(records: list[dict[str, Any]], k: int) -> dict[str, Any]:
    live = [r["live_rank"] for r in records]
    frozen = [r["frozen_rank"] for r in records]
    out: dict[str, Any] = {
        "n_events": len(records),
        "live": _arm(live, k),
        "frozen": _arm(frozen, k),
    }
    if records:
        differences = np.array(
            [_ndcg(a, k) - _ndcg(b, k) for a, b in zip(live, frozen, strict=True)]
        )
        name = f"ndcg@{k}"
        live_ndcg, frozen_ndcg = out["live"][name], out["frozen"][name]
        out[f"delta_{name}"] = live_ndcg - frozen_ndcg
        out[f"lift_{name}"] = live_ndcg / frozen_ndcg - 1 if frozen_ndcg else None
        out[f"delta_recall@{k}"] = out["live"][f"recall@{k}"] - out["frozen"][f"recall@{k}"]
        out["paired"] = paired_tests(differences)
    return out


def _summary(
    records: list[dict[str, Any]],
    n_eligible: int,
    config: StreamingConfig,
    cutoff_ms: int,
    start_ms: int,
    with_events: bool,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "cutoff_ms": cutoff_ms,
        "start_ms": start_ms,
        "k": config.k,
        "n_eligible": n_eligible,
        "max_events": config.max_events,
        "seed": config.seed,
        **_compare(records, config.k),
        "slices": {
            "trained_users": _compare([r for r in records if r["trained_user"]], config.k),
            "new_users": _compare([r for r in records if not r["trained_user"]], config.k),
        },
    }
    if with_events:
        out["events"] = records
    return out
