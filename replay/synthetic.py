"""Synthetic interactions with the shape of real ones, at any size, from a seed.

The model is small on purpose, each piece there because a downstream part needs it:

* item popularity follows a Zipf law (``zipf`` exponent), so recall has a long tail;
* items belong to categories, and each user draws categories from a personal interest
  mix, so DIN's attention over recent behaviour has something to find;
* every user's interests drift from one mix to another over the timeline (``drift``), so
  a model trained on old events is measurably staler than one fed fresh features;
* event times strictly increase, so the output is already in replay order;
* planted interest drift (``switchers``): a share of users who each favour one category
  until a known time and another after it; :meth:`SyntheticSource.planted_switches` is
  the truth (user, switch time, from and to category), which ``prepare`` writes beside
  the events (``switches.parquet``) so a test can check what a recommender recovered;
* sessions (``session``: mean events per session): a user's events come in runs close in
  time, each run on one category, as a visit to a shop is.

With ``switchers=0`` and ``session=1`` (the defaults) the output is what it always was.

Events are generated in fixed blocks, each block from its own seed ``(seed, block)``:
the data depends on the spec only, not on how it is chunked for writing, and 10M events
never need more memory than one block plus the per-user tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from replay.dataset import ITEMS_SCHEMA, RAW_SCHEMA
from replay.loading import LoadStats, SourceError, rechunk

NAME = "synthetic"
BLOCK_ROWS = 65_536
START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
ACTIONS = ("view", "click", "cart", "purchase")
ACTION_SHARES = (0.75, 0.17, 0.05, 0.03)
MAX_CATEGORIES = 64
# A planted switcher draws this share of its sessions from its planted category.
PLANTED_FOCUS = 0.9
# Planted switches fall in this part of the timeline (fractions of ``days``).
SWITCH_WINDOW = (0.4, 0.8)
# Mean gap between two events of one session.
SESSION_GAP_MS = 60_000
DAY_MS = 86_400_000


@dataclass(frozen=True)
class SyntheticSpec:
    """Parameters of ``synthetic:users=N,items=M,events=E,seed=S[,...]``."""

    users: int = 1_000
    items: int = 500
    events: int = 100_000
    seed: int = 0
    categories: int = 0  # 0: chosen from the number of items
    drift: float = 1.0  # 0: interests fixed; 1: each user ends on a fully new mix
    zipf: float = 1.0  # item popularity exponent
    days: float = 90.0  # span of the timeline
    switchers: float = 0.0  # share of users with a planted switch of category
    session: float = 1.0  # mean events per session (1: every event on its own)

    @property
    def category_count(self) -> int:
        if self.categories:
            return self.categories
        return int(min(32, max(2, round(np.sqrt(self.items) / 3))))


def parse_spec(text: str) -> SyntheticSpec:
    """``users=N,items=M,...`` (any subset, any order) into a validated spec."""
    kinds = {f.name: f.type for f in fields(SyntheticSpec)}
    values: dict[str, int | float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, raw = part.partition("=")
        key = key.strip()
        if not sep or key not in kinds:
            raise SourceError(
                f"synthetic: bad parameter {part!r}; use key=value with keys {', '.join(kinds)}"
            )
        try:
            number = float(raw)  # also takes 1e6 and 10_000_000
        except ValueError as exc:
            raise SourceError(f"synthetic: {key}={raw!r} is not a number") from exc
        if kinds[key] == "float":
            values[key] = number
        elif number.is_integer():
            values[key] = int(number)
        else:
            raise SourceError(f"synthetic: {key}={raw!r} is not a whole number")
    spec = SyntheticSpec(**values)  # type: ignore[arg-type]
    if min(spec.users, spec.items, spec.events) < 1:
        raise SourceError("synthetic: users, items and events must be at least 1")
    if not 0 <= spec.categories <= min(MAX_CATEGORIES, spec.items):
        raise SourceError(f"synthetic: categories must be 0..{min(MAX_CATEGORIES, spec.items)}")
    if not 0.0 <= spec.drift <= 1.0 or spec.zipf < 0 or spec.days <= 0:
        raise SourceError("synthetic: need 0 <= drift <= 1, zipf >= 0 and days > 0")
    if not 0.0 <= spec.switchers <= 1.0 or spec.session < 1.0:
        raise SourceError("synthetic: need 0 <= switchers <= 1 and session >= 1")
    if spec.switchers > 0 and spec.category_count < 2:
        raise SourceError("synthetic: a planted switch needs at least 2 categories")
    return spec


class SyntheticSource:
    """The synthetic dataset as a ``Source``: time-ordered raw blocks plus a catalogue."""

    name = NAME
    sorted_by_time = True

    def __init__(self, spec: SyntheticSpec) -> None:
        self.spec = spec
        rng = np.random.default_rng([spec.seed, 0])
        n_cat = spec.category_count
        # Every category gets at least one item, the rest at random.
        self.item_category = rng.permutation(
            np.concatenate([np.arange(n_cat), rng.integers(0, n_cat, spec.items - n_cat)])
        )
        # Zipf weights over a random ranking, so popular items are spread over categories.
        rank = rng.permutation(spec.items) + 1
        weight = rank.astype(np.float64) ** -spec.zipf
        self.category_items: list[np.ndarray] = []
        self.category_cum: list[np.ndarray] = []
        share = np.zeros(n_cat)
        for c in range(n_cat):
            members = np.flatnonzero(self.item_category == c)
            self.category_items.append(members)
            self.category_cum.append(np.cumsum(weight[members]) / weight[members].sum())
            share[c] = weight[members].sum()
        share /= share.sum()
        # Interest mixes centred on the category shares: the sum over users keeps the
        # global Zipf shape while each user leans towards a few categories.
        self.interest_start = _cumulative_mixes(rng, spec.users, share)
        self.interest_end = _cumulative_mixes(rng, spec.users, share)
        activity = (rng.permutation(spec.users) + 1).astype(np.float64) ** -0.5
        self.user_cum = np.cumsum(activity) / activity.sum()
        # The planted switches, from their own seed so the rest is what it was without them.
        planted = np.random.default_rng([spec.seed, 0, 1])
        n_switchers = int(round(spec.switchers * spec.users))
        self.switcher = np.zeros(spec.users, dtype=bool)
        self.switcher[planted.permutation(spec.users)[:n_switchers]] = True
        self.switch_from = planted.integers(0, n_cat, spec.users)
        # Another category than the first: a shift of 1..n_cat-1 around the circle.
        self.switch_to = (self.switch_from + planted.integers(1, max(n_cat, 2), spec.users)) % max(
            n_cat, 1
        )
        low, high = SWITCH_WINDOW
        self.switch_ms = START_MS + (
            planted.uniform(low, high, spec.users) * spec.days * DAY_MS
        ).astype(np.int64)

    def planted_switches(self) -> pa.Table | None:
        """The truth of the planted drift: one row per switcher, None without switchers."""
        users = np.flatnonzero(self.switcher)
        if len(users) == 0:
            return None
        names = np.array([f"category-{c:02d}" for c in range(len(self.category_items))])
        return pa.table(
            {
                "user_id": _prefixed("u", users),
                "switch_time": pa.array(self.switch_ms[users]),
                "from_category": pa.array(names[self.switch_from[users]]),
                "to_category": pa.array(names[self.switch_to[users]]),
            }
        )

    def batches(self, stats: LoadStats) -> Iterator[pa.Table]:
        last_ms = START_MS
        for block, start in enumerate(range(0, self.spec.events, BLOCK_ROWS)):
            count = min(BLOCK_ROWS, self.spec.events - start)
            if self.spec.switchers > 0 or self.spec.session > 1:
                table, last_ms = self._session_block(block, start, count, last_ms)
            else:
                table, last_ms = self._block(block, start, count, last_ms)
            stats.rows_read += count
            yield table

    def _block(self, block: int, start: int, count: int, last_ms: int) -> tuple[pa.Table, int]:
        spec = self.spec
        rng = np.random.default_rng([spec.seed, block + 1])
        index = np.arange(start, start + count, dtype=np.int64)
        progress = index / max(spec.events - 1, 1)
        users = np.minimum(np.searchsorted(self.user_cum, rng.random(count)), spec.users - 1)
        late = rng.random(count) < progress * spec.drift
        mixes = np.where(late[:, None], self.interest_end[users], self.interest_start[users])
        categories = (mixes < rng.random(count)[:, None].astype(np.float32)).sum(axis=1)
        categories = np.minimum(categories, len(self.category_items) - 1)
        items = np.empty(count, dtype=np.int64)
        for c in np.unique(categories):
            where = np.flatnonzero(categories == c)
            picks = np.searchsorted(self.category_cum[c], rng.random(where.size))
            items[where] = self.category_items[c][np.minimum(picks, len(self.category_cum[c]) - 1)]
        actions = rng.choice(len(ACTIONS), size=count, p=ACTION_SHARES)
        mean_gap = spec.days * 86_400_000 / spec.events
        gaps = 1 + np.floor(rng.exponential(max(mean_gap - 1, 0.0), count)).astype(np.int64)
        times = last_ms + np.cumsum(gaps)
        return self._table(index, times, users, items, actions), int(times[-1])

    def _session_block(
        self, block: int, start: int, count: int, last_ms: int
    ) -> tuple[pa.Table, int]:
        """A block of sessions: each one user's run of events, close in time, on one
        category (a planted switcher's favourite one before or after its switch)."""
        spec = self.spec
        rng = np.random.default_rng([spec.seed, block + 1])
        index = np.arange(start, start + count, dtype=np.int64)
        lengths = rng.geometric(1.0 / spec.session, count)  # more sessions than needed
        ends = np.cumsum(lengths)
        n_sessions = int(np.searchsorted(ends, count)) + 1
        lengths = lengths[:n_sessions]
        lengths[-1] -= int(ends[n_sessions - 1]) - count  # the last one is cut at the block
        first = np.zeros(count, dtype=bool)
        first[np.r_[0, np.cumsum(lengths)[:-1]]] = True
        # Gaps: short within a session, longer before one, the timeline's span overall.
        mean_gap = spec.days * DAY_MS / spec.events
        within = min(SESSION_GAP_MS, mean_gap)
        before = max((mean_gap * count - within * (count - n_sessions)) / n_sessions, 1.0)
        scale = np.where(first, before - 1, within - 1)
        gaps = 1 + np.floor(rng.exponential(1.0, count) * np.maximum(scale, 0)).astype(np.int64)
        times = last_ms + np.cumsum(gaps)
        session_start = times[first]

        users = np.minimum(np.searchsorted(self.user_cum, rng.random(n_sessions)), spec.users - 1)
        progress = (index[first] / max(spec.events - 1, 1)).astype(np.float64)
        late = rng.random(n_sessions) < progress * spec.drift
        mixes = np.where(late[:, None], self.interest_end[users], self.interest_start[users])
        categories = (mixes < rng.random(n_sessions)[:, None].astype(np.float32)).sum(axis=1)
        categories = np.minimum(categories, len(self.category_items) - 1)
        planted = self.switcher[users] & (rng.random(n_sessions) < PLANTED_FOCUS)
        switched = session_start >= self.switch_ms[users]
        favourite = np.where(switched, self.switch_to[users], self.switch_from[users])
        categories = np.where(planted, favourite, categories)

        users = np.repeat(users, lengths)
        categories = np.repeat(categories, lengths)
        items = np.empty(count, dtype=np.int64)
        for c in np.unique(categories):
            where = np.flatnonzero(categories == c)
            picks = np.searchsorted(self.category_cum[c], rng.random(where.size))
            items[where] = self.category_items[c][np.minimum(picks, len(self.category_cum[c]) - 1)]
        actions = rng.choice(len(ACTIONS), size=count, p=ACTION_SHARES)
        return self._table(index, times, users, items, actions), int(times[-1])

    def _table(
        self,
        index: np.ndarray,
        times: np.ndarray,
        users: np.ndarray,
        items: np.ndarray,
        actions: np.ndarray,
    ) -> pa.Table:
        count = len(index)
        return pa.Table.from_arrays(
            [
                pa.array(index),
                pa.array(times),
                _prefixed("u", users),
                _prefixed("i", items),
                pa.DictionaryArray.from_arrays(
                    pa.array(actions.astype(np.int32)), pa.array(ACTIONS)
                ).cast(pa.string()),
                pa.nulls(count, pa.float64()),
            ],
            schema=RAW_SCHEMA,
        )

    def catalogue(self) -> pa.Table:
        ids = _prefixed("i", np.arange(self.spec.items))
        titles = _prefixed("Item ", np.arange(self.spec.items))
        names = [f"category-{c:02d}" for c in range(len(self.category_items))]
        categories = pa.array([[names[c]] for c in self.item_category], pa.list_(pa.string()))
        return pa.Table.from_arrays([ids, titles, categories], schema=ITEMS_SCHEMA)


def _cumulative_mixes(rng: np.random.Generator, users: int, share: np.ndarray) -> np.ndarray:
    """Per-user cumulative category distributions (float32 to halve the memory)."""
    gamma = rng.gamma(np.maximum(share * len(share) * 0.5, 1e-3), size=(users, len(share)))
    totals = gamma.sum(axis=1, keepdims=True)
    mixes = np.where(totals > 0, gamma / np.where(totals > 0, totals, 1.0), share)
    return np.cumsum(mixes, axis=1).astype(np.float32)


def _prefixed(prefix: str, numbers: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(numbers), pa.string()), "")


def write_synthetic_events(path: Path, spec: SyntheticSpec, chunk_rows: int = 500_000) -> int:
    """Write the raw synthetic events to one Parquet file, ``chunk_rows`` per row group.

    Returns the number of rows. Memory stays at about one chunk whatever ``spec.events``.
    """
    written = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(path, RAW_SCHEMA) as writer:
        for table in rechunk(SyntheticSource(spec).batches(LoadStats()), chunk_rows):
            writer.write_table(table, row_group_size=chunk_rows)
            written += table.num_rows
    return written
