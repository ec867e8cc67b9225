"""Point-in-time training sets: examples from the archived log, features from Feast.

Each example (``user_id``, ``item_id``, ``event_time`` in epoch ms, ``label``, ...) takes
its features from Feast historical retrieval over the feature history that
``training.data.offline_features`` folded from the same log.

Strictly before, not at: Feast's file offline store (0.67, Dask) joins the latest feature
row with ``feature_timestamp <= entity_timestamp``, inclusive. An example's own event is
folded into a row stamped at its event time, so a lookup at ``event_time`` would hand the
model the very event it must predict. Lookups are made at ``event_time - 1 ms``
(:data:`LOOKUP_OFFSET_MS`); since a row stamped ``s`` holds only events with time ``<= s``,
no example sees an event of its own millisecond or later. Events of the same millisecond
are hidden from each other (a conservative choice: the log cannot order them).

One Feast call per feature view, on the unique (entity, lookup time) pairs, joined back
in pandas. Two reasons: the Dask store de-duplicates its result on (join keys of the views
processed so far, timestamp), so with both views in one call a user's positive and its
negatives at the same time collapse into one row; and the user lookups of a positive and
its negatives are the same, so they are fetched once. Calls are chunked so that the join
Feast materialises (every lookup row times every history row of its entity) stays under
``max_join_rows``.

Features arrive under Feast's full names (``user_recent__recent_items``,
``item_stats__interaction_count``, ...). An entity with no history before the example
gets empty lists and zero counts rather than nulls.

Two engines give the same rows: ``"feast"`` (``get_historical_features`` on the file
offline store; 2-3 minutes per call on MovieLens-100K) and ``"asof"``
(:func:`asof_features`, ``pandas.merge_asof`` on the same Parquet feature history with
the same lookup time, the same inclusive "latest row at or before" rule and the views'
TTL; about a second). ``tests/unit/training_data`` checks that they agree.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytz
from feast import FeatureStore

from feature_repo.definitions import recommend_item_v1, recommend_user_v1
from feature_repo.fields import ITEM_STATS, USER_RECENT
from streamrec.infra.feast_store import service_refs
from streamrec.settings import Settings
from streams.archiver import read_clicks, read_interactions
from training.data.offline_features import (
    FeatureHistoryReport,
    item_stats_path,
    user_recent_path,
    write_feature_history,
)

LOOKUP_OFFSET_MS = 1
# The features a request reads (the same feature services as the API), point in time.
USER_FEATURES: tuple[str, ...] = tuple(service_refs(recommend_user_v1))
ITEM_FEATURES: tuple[str, ...] = tuple(service_refs(recommend_item_v1))
ENGINES: tuple[str, ...] = ("feast", "asof")
# The feature views' TTL (feature_repo/definitions.py): older rows are not returned.
FEATURE_TTL_MS = 3650 * 24 * 3600 * 1000
MAX_JOIN_ROWS = 20_000_000
_LIST_FEATURES = {name for name, kind in (USER_RECENT | ITEM_STATS).items() if kind.endswith("[]")}
_FLOAT_FEATURES = {name for name, kind in (USER_RECENT | ITEM_STATS).items() if kind == "float64"}


def feature_column(ref: str) -> str:
    """The column name of a feature reference: ``view:name`` → ``view__name``."""
    view, name = ref.split(":")
    return f"{view}__{name}"


def lookup_timestamps(event_time_ms: pd.Series) -> pd.Series:
    """The Feast entity timestamp of examples at ``event_time_ms``: one ms before, UTC.

    In ``pytz.UTC`` because the Dask store re-stamps, row by row in Python, any entity
    timestamp whose tz is not exactly that object (pandas' own UTC is another object).
    """
    stamps = pd.to_datetime(event_time_ms.astype("int64") - LOOKUP_OFFSET_MS, unit="ms", utc=True)
    return stamps.dt.tz_convert(pytz.UTC)


def epoch_ms(stamps: pd.Series) -> pd.Series:
    """Timestamps (any unit, tz-aware) or epoch-ms integers → int64 epoch ms."""
    if pd.api.types.is_integer_dtype(stamps):
        return stamps.astype("int64")
    as_ns = pd.to_datetime(stamps, utc=True).astype("datetime64[ns, UTC]")
    return as_ns.astype("int64") // 1_000_000


def _history_sizes(path: Path, key: str) -> pd.Series:
    """Rows per entity in a feature history file (how wide Feast's join of it gets)."""
    if not path.exists():
        return pd.Series(dtype="int64")
    keys = pq.read_table(path, columns=[key])[key].to_pandas()
    return keys.value_counts()


def _chunks(
    lookups: pd.DataFrame, key: str, sizes: pd.Series, limit: int
) -> Iterator[pd.DataFrame]:
    """Slices of ``lookups`` (sorted by key) whose join with the history stays near ``limit``."""
    weights = lookups[key].map(sizes).fillna(0).to_numpy() + 1
    start, total = 0, 0.0
    for end, weight in enumerate(weights):
        if total and total + weight > limit:
            yield lookups.iloc[start:end]
            start, total = end, 0.0
        total += weight
    if start < len(lookups):
        yield lookups.iloc[start:]


def _view_features(
    store: FeatureStore,
    examples: pd.DataFrame,
    key: str,
    refs: Sequence[str],
    history: Path,
    max_join_rows: int,
) -> pd.DataFrame:
    """Features of one view for the unique (key, event_time) pairs of ``examples``."""
    lookups = (
        examples[[key, "event_time"]]
        .drop_duplicates()
        .sort_values([key, "event_time"], kind="stable")
        .reset_index(drop=True)
    )
    lookups["event_timestamp"] = lookup_timestamps(lookups["event_time"])
    sizes = _history_sizes(history, key)
    parts = []
    for chunk in _chunks(lookups, key, sizes, max_join_rows):
        job = store.get_historical_features(
            entity_df=chunk, features=list(refs), full_feature_names=True
        )
        parts.append(job.to_df().drop(columns=["event_timestamp"]))
    columns = [key, "event_time", *(feature_column(ref) for ref in refs)]
    if not parts:
        return pd.DataFrame({name: [] for name in columns})
    return pd.concat(parts, ignore_index=True)[columns]


def _fill_missing(frame: pd.DataFrame, refs: Sequence[str]) -> None:
    """No history before the example: empty lists and zero counts, typed as Feast's are."""
    for ref in refs:
        column = feature_column(ref)
        if ref.split(":")[1] in _LIST_FEATURES:
            # ``tolist``: Python values in one call (``list`` of an array made a numpy
            # scalar per element: most of the DIN examples' lookup at 1M events)
            frame[column] = [
                value.tolist()
                if isinstance(value, np.ndarray)
                else value
                if isinstance(value, list)
                else []
                for value in frame[column]
            ]
        elif ref.split(":")[1] in _FLOAT_FEATURES:
            frame[column] = frame[column].fillna(0.0).astype("float64")
        else:
            frame[column] = frame[column].fillna(0).astype("int64")


def historical_features(
    store: FeatureStore,
    examples: pd.DataFrame,
    *,
    user_features: Sequence[str] = USER_FEATURES,
    item_features: Sequence[str] = ITEM_FEATURES,
    max_join_rows: int = MAX_JOIN_ROWS,
) -> pd.DataFrame:
    """``examples`` (needs ``user_id``, ``item_id``, ``event_time`` ms) with the features
    as they stood strictly before each example's event time, in the examples' row order."""
    repo = Path(store.config.repo_path or ".")
    result = examples.reset_index(drop=True).copy()
    result["event_time"] = result["event_time"].astype("int64")
    for key, refs, history in (
        ("user_id", user_features, user_recent_path(repo)),
        ("item_id", item_features, item_stats_path(repo)),
    ):
        if not refs:
            continue
        found = _view_features(store, result, key, refs, history, max_join_rows)
        found["event_time"] = found["event_time"].astype("int64")
        result = result.merge(found, on=[key, "event_time"], how="left", validate="many_to_one")
        _fill_missing(result, refs)
    return result


def _asof_view(
    examples: pd.DataFrame, key: str, refs: Sequence[str], history: pd.DataFrame, ttl_ms: int
) -> pd.DataFrame:
    """Features of one view for the unique (key, event_time) pairs, the Feast rule in pandas."""
    names = [ref.split(":")[1] for ref in refs]
    lookups = examples[[key, "event_time"]].drop_duplicates()
    lookups = lookups.assign(lookup_ms=lookups["event_time"] - LOOKUP_OFFSET_MS)
    rows = history[[key, "event_timestamp", *names]].copy()
    stamps = rows["event_timestamp"]
    rows["row_ms"] = epoch_ms(stamps)
    found = pd.merge_asof(
        lookups.sort_values("lookup_ms", kind="stable"),
        rows.drop(columns=["event_timestamp"]).sort_values("row_ms", kind="stable"),
        left_on="lookup_ms",
        right_on="row_ms",
        by=key,
        direction="backward",  # the latest row with row_ms <= lookup_ms, as Feast joins
        tolerance=ttl_ms,
    )
    renamed = {name: feature_column(ref) for name, ref in zip(names, refs, strict=True)}
    return found.rename(columns=renamed)[[key, "event_time", *renamed.values()]]


def asof_features(
    examples: pd.DataFrame,
    user_history: pd.DataFrame | Path,
    item_history: pd.DataFrame | Path,
    *,
    user_features: Sequence[str] = USER_FEATURES,
    item_features: Sequence[str] = ITEM_FEATURES,
    ttl_ms: int = FEATURE_TTL_MS,
) -> pd.DataFrame:
    """What :func:`historical_features` returns, computed with ``pandas.merge_asof``.

    ``user_history`` and ``item_history`` are the feature-history tables (or their Parquet
    paths) that ``training.data.offline_features`` writes and Feast's batch sources read.
    """
    result = examples.reset_index(drop=True).copy()
    result["event_time"] = result["event_time"].astype("int64")
    for key, refs, history in (
        ("user_id", user_features, user_history),
        ("item_id", item_features, item_history),
    ):
        if not refs:
            continue
        table = pd.read_parquet(history) if isinstance(history, Path) else history
        found = _asof_view(result, key, refs, table, ttl_ms)
        result = result.merge(found, on=[key, "event_time"], how="left", validate="many_to_one")
        _fill_missing(result, refs)
    return result


def build_examples(
    interactions: pa.Table | pd.DataFrame, *, negatives: int = 4, seed: int = 0
) -> pd.DataFrame:
    """Positives from the log plus ``negatives`` sampled negatives per positive.

    ``interactions`` is sorted by event time without repeated event ids (what
    ``read_interactions`` returns). Columns: ``user_id, item_id, event_time, label``
    (1 or 0) and ``event_id`` (of the positive a negative was drawn for). A negative shares
    its positive's user and time and is an item that had appeared in the log strictly
    before that time and that the user had not interacted with up to then: sampling a
    future item would tell the model "unknown item ⇒ negative". Seeded, so the same log
    and seed give the same set; fewer negatives when a user has seen almost every item.
    """
    frame = interactions.to_pandas() if isinstance(interactions, pa.Table) else interactions
    users = frame["user_id"].to_numpy(dtype=object)
    items = frame["item_id"].to_numpy(dtype=object)
    times = frame["event_time"].to_numpy(dtype="int64")
    event_ids = frame["event_id"].to_numpy(dtype=object)
    rng = np.random.default_rng(seed)
    pool: list[str] = []
    pool_first_time: list[int] = []
    in_pool: set[str] = set()
    history: dict[str, set[str]] = {}
    out: dict[str, list[Any]] = {
        "user_id": [],
        "item_id": [],
        "event_time": [],
        "label": [],
        "event_id": [],
    }

    def emit(user: str, item: str, time: int, label: int, event_id: str) -> None:
        out["user_id"].append(user)
        out["item_id"].append(item)
        out["event_time"].append(time)
        out["label"].append(label)
        out["event_id"].append(event_id)

    for user, item, time, event_id in zip(users, items, times, event_ids, strict=True):
        seen = history.setdefault(user, set())
        seen.add(item)
        emit(user, item, int(time), 1, event_id)
        available = bisect.bisect_left(pool_first_time, time)
        chosen: set[str] = set()
        for _ in range(negatives * 20):
            if len(chosen) == negatives or available == 0:
                break
            candidate = pool[int(rng.integers(available))]
            if candidate not in seen and candidate not in chosen:
                chosen.add(candidate)
                emit(user, candidate, int(time), 0, event_id)
        if item not in in_pool:
            in_pool.add(item)
            pool.append(item)
            pool_first_time.append(int(time))
    result = pd.DataFrame(out)
    result["event_time"] = result["event_time"].astype("int64")
    result["label"] = result["label"].astype("int8")
    return result


def build_training_set(
    settings: Settings,
    *,
    until_ms: int | None = None,
    negatives: int = 4,
    seed: int = 0,
    store: FeatureStore | None = None,
    max_join_rows: int = MAX_JOIN_ROWS,
    engine: str = "asof",
) -> tuple[pd.DataFrame, FeatureHistoryReport]:
    """The archived log before ``until_ms`` → feature history → examples with features.

    The feature history is rebuilt from the same cut of the log, so nothing at or after
    ``until_ms`` is in any feature either. ``engine`` is ``"feast"`` or ``"asof"``.
    """
    from streamrec.infra.feast_store import apply_definitions, open_store

    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: expected one of {ENGINES}")

    interactions = read_interactions(settings.data_dir, settings.topic_prefix, until_ms)
    clicks = read_clicks(settings.data_dir, settings.topic_prefix, until_ms)
    report = write_feature_history(
        settings.data_dir, interactions, clicks, keep=settings.recent_items_max
    )
    examples = build_examples(interactions, negatives=negatives, seed=seed)
    if engine == "asof":
        found = asof_features(examples, Path(report.user_path), Path(report.item_path))
        return found, report
    if store is None:
        store = open_store(settings)
        apply_definitions(store)
    return historical_features(store, examples, max_join_rows=max_join_rows), report
