"""Point-in-time tensors for the three stages, from the feature history of the log.

The training events are folded into the feature history with the worker's own functions
(:func:`training.data.offline_features.write_feature_history`), and every feature a stage sees
is read back from that history as it stood strictly before the moment it is used
(:func:`training.data.datasets.asof_features`, or Feast's ``get_historical_features``):

- DIN examples (one positive per training event plus sampled negatives) at the event's
  time: the user's recent items, the candidate's popularity / recency / CTR and the user's
  activity, all through :mod:`models.context`, the functions serving uses.
- :class:`FrozenState`, everything known at one instant (the training cutoff for the
  static evaluation, the start of the held-out tail for RankNet's lists): per user the
  recent items and context, per item the serving table.

Indices are those of the split: items ``0 .. n_items - 1`` (training items, most popular
first) and users ``0 .. n_users - 1``. The history only holds training events, so every
item it names has an index.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from torch import Tensor

from models import context
from models.cascade import ItemTable
from streams.archiver import INTERACTION_SCHEMA
from streams.folding import TREND_HALF_LIFE_MS
from training.data.datasets import (
    ENGINES,
    asof_features,
    build_examples,
    epoch_ms,
    historical_features,
)
from training.data.offline_features import item_stats_path, user_recent_path, write_feature_history
from training.data.split import TimeSplit
from training.forked import forked_map

T = TypeVar("T")
PAD_ITEM = 0  # padding slots hold a valid index; the mask marks them


@dataclass
class FeatureHistory:
    """The two feature-history tables folded from one cut of the log."""

    users: pd.DataFrame  # user_recent rows (user_id, recent_items, ..., event_timestamp)
    items: pd.DataFrame  # item_stats rows
    folder: Path | None = None  # where the Parquet copies live while the engine needs them


def archived_table(events: pd.DataFrame) -> pa.Table:
    """An events frame (the prepared log or ``read_interactions``) as the archiver's table."""
    frame = events.reset_index(drop=True).copy()
    if "source" not in frame:
        frame["source"] = "replay"
    if "rating" not in frame:
        frame["rating"] = None
    if "event_id" not in frame:
        raise ValueError("events need an event_id column (the archived interaction log)")
    frame["kafka_partition"] = 0
    frame["kafka_offset"] = np.arange(len(frame), dtype=np.int64)
    frame = frame.sort_values("event_time", kind="stable", ignore_index=True)
    names = [name for name in INTERACTION_SCHEMA.names]
    return pa.Table.from_pandas(frame[names], schema=INTERACTION_SCHEMA, preserve_index=False)


def fold_history(
    events: pd.DataFrame,
    clicks: pd.DataFrame | None,
    keep: int,
    folder: Path,
    beside: Callable[[], T] | None = None,
) -> tuple[FeatureHistory, T | None]:
    """Fold the log into ``folder/features/*.parquet`` and read both tables back; and
    ``beside()``'s result (None without it).

    The user and the item side are folded in forked processes of their own, and
    ``beside`` (work that needs no history) in a third, or on two cores after the user
    side, the shorter: at 1M events the sides took about 15 and 30 s, one after the
    other 42 s.
    """
    click_table = (
        pa.Table.from_pandas(clicks.sort_values("event_time", kind="stable"), preserve_index=False)
        if clicks is not None and len(clicks)
        else None
    )
    table = archived_table(events)
    calls: list[Callable[[], Any]] = [
        functools.partial(
            write_feature_history, folder, table, click_table, keep=keep, sides=(side,)
        )
        for side in ("items", "users")  # the longer first
    ]
    if beside is not None:
        calls.append(beside)
    done = forked_map(calls)
    users = pd.read_parquet(user_recent_path(folder))
    items = pd.read_parquet(item_stats_path(folder))
    for frame in (users, items):
        frame["event_timestamp"] = epoch_ms(frame["event_timestamp"])
    return FeatureHistory(users, items, folder), (done[2] if beside is not None else None)


# What the stages read of a looked-up row: the user's history (``history_matrix``) and the
# context features (``user_context``, ``item_context``); the service's other features
# (the recent items' times, the item's other counts) are not looked up for them.
STAGE_USER_FEATURES: tuple[str, ...] = (
    "user_recent:recent_items",
    "user_recent:interaction_count",
    "user_recent:last_event_time",
)
STAGE_ITEM_FEATURES: tuple[str, ...] = (
    "item_stats:click_count",
    "item_stats:last_event_time",
    "item_stats:trend_score",
)


def lookup(
    frame: pd.DataFrame,
    history: FeatureHistory,
    engine: str = "asof",
    *,
    user_features: Sequence[str] = STAGE_USER_FEATURES,
    item_features: Sequence[str] = STAGE_ITEM_FEATURES,
) -> pd.DataFrame:
    """``user_features`` and ``item_features`` as they stood strictly before each row's
    ``event_time``, by the chosen engine (the stages' by default)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: expected one of {ENGINES}")
    if engine == "asof":
        return asof_features(
            frame,
            history.users,
            history.items,
            user_features=user_features,
            item_features=item_features,
        )
    if history.folder is None:
        raise ValueError("the feast engine needs the feature history on disk")
    from streamrec.infra.feast_store import apply_definitions, open_store
    from streamrec.settings import Settings

    with tempfile.TemporaryDirectory(prefix="streamrec-feast-") as state:
        settings = Settings(redis_url="none", data_dir=history.folder, state_dir=Path(state))
        store = open_store(settings)
        apply_definitions(store)
        return historical_features(
            store, frame, user_features=user_features, item_features=item_features
        )


def history_matrix(
    recent_items: pd.Series, item_index: dict[str, int], max_history: int
) -> tuple[Tensor, Tensor]:
    """Lists of item ids (most recent first) → (N, L) long indices and (N, L) bool mask."""
    n = len(recent_items)
    matrix = np.full((n, max_history), PAD_ITEM, dtype=np.int64)
    mask = np.zeros((n, max_history), dtype=bool)
    for row, items in enumerate(recent_items):
        indices = [item_index[i] for i in list(items)[:max_history] if i in item_index]
        matrix[row, : len(indices)] = indices
        mask[row, : len(indices)] = True
    return torch.from_numpy(matrix), torch.from_numpy(mask)


def item_context(found: pd.DataFrame, now_ms: Tensor | int) -> Tensor:
    """(N, 3) [popularity, recency, ctr] of looked-up item rows at ``now_ms``.

    CTR uses zero impressions, as the API does until the store serves impression counts.
    """
    trend = torch.tensor(found["item_stats__trend_score"].to_numpy(np.float64))
    last = torch.tensor(found["item_stats__last_event_time"].to_numpy(np.int64))
    clicks = torch.tensor(found["item_stats__click_count"].to_numpy(np.int64))
    return torch.stack(
        [
            context.popularity(trend, last, now_ms, TREND_HALF_LIFE_MS),
            context.recency(last, now_ms),
            context.ctr(clicks, torch.zeros_like(clicks)),
        ],
        dim=-1,
    )


def user_context(found: pd.DataFrame, now_ms: Tensor | int) -> Tensor:
    """(N, 2) [activity, user_recency] of looked-up user rows at ``now_ms``."""
    count = torch.tensor(found["user_recent__interaction_count"].to_numpy(np.int64))
    last = torch.tensor(found["user_recent__last_event_time"].to_numpy(np.int64))
    return context.user_context(count, last, now_ms)


@dataclass
class DINExamples:
    """Point-in-time examples; the history is stored once per (user, time) lookup."""

    lookup: Tensor  # (N,) long row of `history` for each example
    history: Tensor  # (Q, L) long item indices, most recent first
    history_mask: Tensor  # (Q, L) bool
    candidate: Tensor  # (N,) long item index
    context: Tensor  # (N, 5) float32 [popularity, recency, ctr, activity, user_recency]
    label: Tensor  # (N,) float32 1 / 0
    user: Tensor  # (N,) long user index
    time: Tensor  # (N,) long event time ms

    def __len__(self) -> int:
        return int(self.label.numel())

    def select(self, keep: Tensor) -> DINExamples:
        """A subset of examples (the history table is shared)."""
        return DINExamples(
            self.lookup[keep],
            self.history,
            self.history_mask,
            self.candidate[keep],
            self.context[keep],
            self.label[keep],
            self.user[keep],
            self.time[keep],
        )


def din_examples(
    events: pd.DataFrame,
    history: FeatureHistory,
    split: TimeSplit,
    *,
    negatives: int,
    max_history: int,
    seed: int,
    engine: str = "asof",
) -> DINExamples:
    """One positive per training event plus ``negatives`` past, unseen, uniformly drawn items.

    ``events`` are the training events (the ones folded into ``history``).
    """
    frame = events[["event_id", "event_time", "user_id", "item_id"]].sort_values(
        "event_time", kind="stable", ignore_index=True
    )
    examples = build_examples(frame, negatives=negatives, seed=seed)
    found = lookup(examples[["user_id", "item_id", "event_time", "label"]], history, engine)
    keys = found[["user_id", "event_time"]].astype({"user_id": str})
    codes, uniques = pd.factorize(pd.MultiIndex.from_frame(keys))
    first_rows = pd.Series(np.arange(len(found))).groupby(codes).first().to_numpy()
    hist, mask = history_matrix(
        found["user_recent__recent_items"].iloc[first_rows].reset_index(drop=True),
        split.item_index,
        max_history,
    )
    now = torch.tensor(found["event_time"].to_numpy(np.int64))
    features = torch.cat([item_context(found, now), user_context(found, now)], dim=-1)
    return DINExamples(
        lookup=torch.from_numpy(codes.astype(np.int64)),
        history=hist,
        history_mask=mask,
        candidate=torch.tensor(found["item_id"].map(split.item_index).to_numpy(np.int64)),
        context=features.float(),
        label=torch.tensor(found["label"].to_numpy(np.float32)),
        user=torch.tensor(found["user_id"].map(split.user_index).to_numpy(np.int64)),
        time=now,
    )


@dataclass
class FrozenState:
    """Every user's and item's features as they stood just before ``at_ms``."""

    at_ms: int
    recent_items: list[Tensor]  # per user (L_u,) long, most recent first; empty if none
    user_context: Tensor  # (n_users, 2)
    items: ItemTable  # popularity / recency / ctr per item at at_ms

    def __getstate__(self) -> dict[str, Any]:
        """Pickled with the users' lists as one tensor and their lengths: a list of one
        small tensor per user (55k at 1M events) took 3.4 s to pickle and 4.1 s to load
        each, twice per `streamrec train` (handed to Ray Train's worker in ``ray.put``)."""
        state = dict(self.__dict__)
        lists = state.pop("recent_items")
        state["recent_flat"] = torch.cat(lists) if lists else torch.zeros(0, dtype=torch.long)
        state["recent_lengths"] = [int(t.numel()) for t in lists]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        if "recent_flat" in state:  # (pickled before: the list itself)
            flat, lengths = state.pop("recent_flat"), state.pop("recent_lengths")
            # each user's own copy (a view would keep, and a later pickle would carry,
            # the whole flat tensor)
            state["recent_items"] = [t.clone() for t in torch.split(flat, lengths)]
        self.__dict__.update(state)


def frozen_state(
    history: FeatureHistory,
    split: TimeSplit,
    at_ms: int,
    *,
    max_history: int,
    categories: Tensor | None = None,
    engine: str = "asof",
) -> FrozenState:
    """Look up every user and item at ``at_ms`` (features of events before it only)."""
    users = pd.DataFrame(
        {"user_id": split.user_ids.astype(str), "item_id": "", "event_time": at_ms}
    )
    found_users = lookup(users, history, engine) if len(users) else users
    items = pd.DataFrame(
        {"user_id": "", "item_id": split.item_ids.astype(str), "event_time": at_ms}
    )
    found_items = lookup(items, history, engine)
    recent: list[Tensor] = []
    for listed in found_users["user_recent__recent_items"]:
        indices = [split.item_index[i] for i in list(listed)[:max_history] if i in split.item_index]
        recent.append(torch.tensor(indices, dtype=torch.long))
    item_side = item_context(found_items, at_ms)
    table = ItemTable(
        popularity=item_side[:, 0].contiguous(),
        recency=item_side[:, 1].contiguous(),
        ctr=item_side[:, 2].contiguous(),
        categories=categories,
    )
    return FrozenState(at_ms, recent, user_context(found_users, at_ms).float(), table)


def item_categories(items: pd.DataFrame | None, split: TimeSplit) -> tuple[Tensor, list[str]]:
    """(n_items,) long category per item (its first listed category; 0 = unknown)."""
    names = ["<unknown>"]
    if items is None or "categories" not in items:
        return torch.zeros(split.n_items, dtype=torch.long), names
    first: dict[str, str] = {}
    for item_id, listed in zip(items["item_id"].astype(str), items["categories"], strict=True):
        values = list(listed) if isinstance(listed, list | np.ndarray) else []
        if values:
            first[item_id] = str(values[0])
    names += sorted(set(first.values()))
    index = {name: n for n, name in enumerate(names)}
    codes = [index[first[i]] if i in first else 0 for i in split.item_ids.astype(str)]
    return torch.tensor(codes, dtype=torch.long), names
