"""A global time split of the event log that cannot leak the future.

Every event before ``train_end_ms`` is training, events in ``[train_end_ms,
validation_end_ms)`` are validation and the rest are test. The boundaries are event-time
quantiles of the log; events that share a timestamp never straddle a boundary.

Indices come from the training period only:

- items: only items seen in training are candidates. Item index 0 is the most popular
  training item (distinct users), ties broken by id, so a scorer's ties resolve toward the
  more popular item when :func:`training.evaluation.metrics.top_k` breaks them by lower index.
- users: training users take indices ``0 .. n_train_users - 1``; users first seen after
  the cutoff ("new" users) follow, so they can be scored (from popularity or other
  non-personal signals) and are evaluated as their own slice.

Every action counts as an interaction (implicit feedback); ratings are ignored.
A target's relevant items for a user are the user's items in that period that are
candidates and not already among the user's training items; a user with none is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

EVENT_COLUMNS = ["event_time", "user_id", "item_id"]


def load_events(path: Path) -> pd.DataFrame:
    """The columns the protocol needs, sorted by event time (stable for ties)."""
    events = pd.read_parquet(path, columns=EVENT_COLUMNS)
    return events.sort_values("event_time", kind="stable", ignore_index=True)


@dataclass(frozen=True)
class SplitConfig:
    # Fractions of events by event-time quantile; the test period gets the remainder.
    train_fraction: float = 0.8
    # 0 makes the validation period empty: test is then everything after the cutoff.
    validation_fraction: float = 0.1
    # Each period evaluates at most this many users, a seeded sample (MovieLens-100K has
    # ~200; the 1M-event log ~11,000, whose per-user cascade took minutes per metric).
    max_evaluated_users: int = 2000

    def __post_init__(self) -> None:
        if self.max_evaluated_users < 1:
            raise ValueError(f"max_evaluated_users must be >= 1, got {self.max_evaluated_users}")
        if not 0 < self.train_fraction < 1:
            raise ValueError(f"train_fraction must be in (0, 1), got {self.train_fraction}")
        if self.validation_fraction < 0 or self.train_fraction + self.validation_fraction >= 1:
            raise ValueError(
                "validation_fraction must be >= 0 and leave a non-empty test period, got "
                f"train={self.train_fraction}, validation={self.validation_fraction}"
            )


@dataclass(frozen=True)
class Target:
    """The users to evaluate in one period and, per user, their relevant items."""

    name: str
    users: np.ndarray  # (U,) int64 user indices, ascending, each with >= 1 relevant item
    relevant: sp.csr_matrix  # (U, n_items) binary; row r belongs to users[r]
    n_events: int  # events in the period
    n_skipped_users: int  # users active in the period with no relevant item
    n_not_candidate: int  # (user, item) pairs dropped: item unseen in training
    n_seen_in_training: int  # (user, item) pairs dropped: already a training item of the user
    n_sampled_out: int = 0  # users with relevant items left out of the evaluated sample

    @property
    def n_relevant(self) -> np.ndarray:
        """(U,) relevant items per evaluated user."""
        return np.diff(self.relevant.indptr)


@dataclass(frozen=True)
class TimeSplit:
    train_end_ms: int  # first event time that is not training
    validation_end_ms: int  # first event time of the test period
    user_ids: np.ndarray  # (n_users,) str; training users first, then new users
    n_train_users: int
    item_ids: np.ndarray  # (n_items,) str; the candidates, most popular first
    user_index: dict[str, int]
    item_index: dict[str, int]
    train_user: np.ndarray  # (E,) int64, one entry per training event
    train_item: np.ndarray  # (E,) int64
    train_time: np.ndarray  # (E,) int64 event time ms
    train_matrix: sp.csr_matrix  # (n_users, n_items) binary; the items masked per user
    validation: Target
    test: Target

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def item_popularity(self) -> np.ndarray:
        """(n_items,) distinct training users per item; non-increasing by construction."""
        return np.asarray(self.train_matrix.sum(axis=0)).ravel()

    @property
    def user_activity(self) -> np.ndarray:
        """(n_users,) training events per user; 0 for new users."""
        return np.bincount(self.train_user, minlength=self.n_users)

    def target(self, name: str) -> Target:
        if name == "test":
            return self.test
        if name == "validation":
            return self.validation
        raise ValueError(f"unknown target {name!r}; expected 'validation' or 'test'")


def _boundary(times: np.ndarray, fraction: float) -> int:
    """The event time at the ``fraction`` quantile of ``times`` (sorted ascending)."""
    return int(times[min(int(len(times) * fraction), len(times) - 1)])


def time_split(events: pd.DataFrame, config: SplitConfig | None = None) -> TimeSplit:
    """Split ``events`` (columns ``event_time, user_id, item_id``) by global time."""
    config = config or SplitConfig()
    if events.empty:
        raise ValueError("cannot split an empty event log")
    events = events.sort_values("event_time", kind="stable", ignore_index=True)
    times = events["event_time"].to_numpy(np.int64)
    train_end = _boundary(times, config.train_fraction)
    validation_end = (
        _boundary(times, config.train_fraction + config.validation_fraction)
        if config.validation_fraction > 0
        else train_end
    )
    is_train = times < train_end
    if not is_train.any():
        raise ValueError("the training period is empty; the log has too few distinct times")
    train = events[is_train]
    validation = events[(times >= train_end) & (times < validation_end)]
    test = events[times >= validation_end]

    train_users = np.sort(train["user_id"].unique().astype(str))
    later_users = pd.concat([validation["user_id"], test["user_id"]]).unique().astype(str)
    new_users = np.sort(np.setdiff1d(later_users, train_users))
    user_ids = np.concatenate([train_users, new_users])
    user_index = {user: index for index, user in enumerate(user_ids)}

    pairs = train[["user_id", "item_id"]].drop_duplicates()
    distinct_users = pairs.groupby("item_id").size()
    ranked = distinct_users.reset_index(name="users").sort_values(
        ["users", "item_id"], ascending=[False, True], kind="stable"
    )
    item_ids = ranked["item_id"].to_numpy().astype(str)
    item_index = {item: index for index, item in enumerate(item_ids)}

    train_user = train["user_id"].map(user_index).to_numpy(np.int64)
    train_item = train["item_id"].map(item_index).to_numpy(np.int64)
    train_matrix = _binary_matrix(train_user, train_item, (len(user_ids), len(item_ids)))

    return TimeSplit(
        train_end_ms=train_end,
        validation_end_ms=validation_end,
        user_ids=user_ids,
        n_train_users=len(train_users),
        item_ids=item_ids,
        user_index=user_index,
        item_index=item_index,
        train_user=train_user,
        train_item=train_item,
        train_time=train["event_time"].to_numpy(np.int64),
        train_matrix=train_matrix,
        validation=_sampled(
            _target("validation", validation, user_index, item_index, train_matrix),
            config.max_evaluated_users,
        ),
        test=_sampled(
            _target("test", test, user_index, item_index, train_matrix),
            config.max_evaluated_users,
        ),
    )


def _binary_matrix(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=shape)
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def _target(
    name: str,
    period: pd.DataFrame,
    user_index: dict[str, int],
    item_index: dict[str, int],
    train_matrix: sp.csr_matrix,
) -> Target:
    pairs = period[["user_id", "item_id"]].drop_duplicates()
    users = pairs["user_id"].map(user_index).to_numpy(np.int64)
    items = pairs["item_id"].map(item_index)
    is_candidate = items.notna().to_numpy()
    users_c = users[is_candidate]
    items_c = items[is_candidate].to_numpy(np.int64)
    seen = (
        np.asarray(train_matrix[users_c, items_c]).ravel() > 0
        if len(users_c)
        else np.zeros(0, dtype=bool)
    )
    users_r, items_r = users_c[~seen], items_c[~seen]

    evaluated = np.unique(users_r)
    row_of = np.searchsorted(evaluated, users_r)
    relevant = _binary_matrix(row_of, items_r, (len(evaluated), train_matrix.shape[1]))
    return Target(
        name=name,
        users=evaluated,
        relevant=relevant,
        n_events=len(period),
        n_skipped_users=len(np.unique(users)) - len(evaluated),
        n_not_candidate=int((~is_candidate).sum()),
        n_seen_in_training=int(seen.sum()),
    )


def _sampled(target: Target, max_users: int) -> Target:
    """``target`` with at most ``max_users`` users, drawn with a fixed seed."""
    if len(target.users) <= max_users:
        return target
    rows = np.sort(np.random.default_rng(0).choice(len(target.users), max_users, replace=False))
    return replace(
        target,
        users=target.users[rows],
        relevant=target.relevant[rows],
        n_sampled_out=len(target.users) - max_users,
    )


def restrict_target(target: Target, keep: np.ndarray) -> Target:
    """``target`` with only the users where ``keep`` (one bool per target user) is true.

    For diagnostics (e.g. returning users only); counts of dropped pairs are kept as is.
    """
    keep = np.asarray(keep, dtype=bool)
    return replace(
        target,
        users=target.users[keep],
        relevant=target.relevant[np.flatnonzero(keep)],
        n_skipped_users=target.n_skipped_users + int((~keep).sum()),
    )


def _date(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


def split_summary(split: TimeSplit) -> dict[str, Any]:
    """The split's periods and counts, as every report shows them."""
    test = split.test
    return {
        "train_end": _date(split.train_end_ms),
        "validation_end": _date(split.validation_end_ms),
        "train_events": len(split.train_user),
        "train_users": split.n_train_users,
        "candidates": split.n_items,
        "validation_users": len(split.validation.users),
        "test_events": test.n_events,
        "test_users": len(test.users),
        "test_users_sampled_out": test.n_sampled_out,
        "validation_users_sampled_out": split.validation.n_sampled_out,
        "test_new_users": int((test.users >= split.n_train_users).sum()),
        "test_users_skipped": test.n_skipped_users,
        "test_pairs_not_candidate": test.n_not_candidate,
        "test_pairs_seen_in_training": test.n_seen_in_training,
        "test_relevant_per_user_median": float(np.median(test.n_relevant)),
    }
