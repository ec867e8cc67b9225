"""``streamrec materialize``: the online store filled from the offline store, Feast's way.

The worker and ``backfill`` write the online store from the topics. This is the other
road, for the batch feature views: the archived log is folded into the Feast batch
sources (``training.data.offline_features``, the same folding functions as the worker), and
``FeatureStore.materialize`` / ``materialize_incremental`` copy each entity's latest row
in the interval to the online store. Incremental runs start where the previous run of
the same view ended (Feast records the intervals in its registry), so they copy only rows
stamped since.

The batch views are ``user_recent`` and ``item_stats``; the Spark views have their own
batch files, written only by whoever archives them, and are materialized when named.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from streamrec.settings import Settings

BATCH_VIEWS = ("user_recent", "item_stats")


@dataclass
class MaterializeReport:
    views: tuple[str, ...]
    start_ms: int | None  # None: incremental (from each view's last materialized end)
    end_ms: int
    history_rows: int  # rows written to the batch sources before materializing

    def summary(self) -> str:
        since = "each view's last run" if self.start_ms is None else _iso(self.start_ms)
        return (
            f"materialized {', '.join(self.views)} from {since} to {_iso(self.end_ms)} "
            f"({self.history_rows:,} feature-history rows from the archive)"
        )


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def materialize(
    settings: Settings,
    *,
    end_ms: int,
    start_ms: int | None = None,
    views: tuple[str, ...] = BATCH_VIEWS,
    build_history: bool = True,
) -> MaterializeReport:
    """Copy the batch sources' rows stamped in [start, end] (or since the last run, when
    ``start_ms`` is None) to the online store; first rebuild the sources from the archive."""
    from streamrec.infra.feast_store import apply_definitions, open_store
    from training.data.offline_features import build_feature_history

    if start_ms is not None and start_ms >= end_ms:
        raise ValueError("--start must be before --end")
    rows = 0
    if build_history:
        report = build_feature_history(settings)
        if report.interactions == 0:
            raise ValueError(
                f"no archived interactions for {settings.topic_prefix!r} under "
                f"{settings.data_dir}; run `streamrec archive --once` first"
            )
        rows = report.user_rows + report.item_rows
    store = open_store(settings)
    apply_definitions(store)
    known = {view.name for view in store.list_feature_views()}
    unknown = sorted(set(views) - known)
    if unknown:
        raise ValueError(f"unknown feature views {unknown}; known: {sorted(known)}")
    end = datetime.fromtimestamp(end_ms / 1000, tz=UTC)
    if start_ms is None:
        store.materialize_incremental(end_date=end, feature_views=list(views))
    else:
        start = datetime.fromtimestamp(start_ms / 1000, tz=UTC)
        store.materialize(start_date=start, end_date=end, feature_views=list(views))
    return MaterializeReport(views, start_ms, end_ms, rows)
