"""Every feature view's fields, declared once: name → value type, in row order.

The Feast views (`definitions.py`), the rows the worker, backfill and Spark push
(`streams.folding`, `streams.spark.job`), the Parquet batch sources training reads
(`training.data.offline_features`) and the references the API and training read
(`streamrec.infra.feast_store.service_refs`) are all derived from these mappings, so a
field added here is added everywhere, and a test fails where a row builder forgets it.

Plain strings rather than Feast or Arrow types, so the worker and the API can import the
declaration without importing Feast.
"""

from __future__ import annotations

from typing import Literal

Kind = Literal["int64", "float64", "string[]", "int64[]", "float64[]"]

# Every pushed row carries its entity key and the row time (epoch ms) Feast orders rows by.
ROW_TIME = "event_timestamp"

# What the user did last, newest first (the worker's UserState).
USER_RECENT: dict[str, Kind] = {
    "recent_items": "string[]",
    "recent_times": "int64[]",  # epoch ms, parallel to recent_items
    "interaction_count": "int64",
    "last_event_time": "int64",
}

# Running counts per item (the worker's ItemState).
ITEM_STATS: dict[str, Kind] = {
    "interaction_count": "int64",
    "click_count": "int64",
    "purchase_count": "int64",
    "last_event_time": "int64",
    # decayed interaction count as of last_event_time (streams.folding.TREND_HALF_LIFE_MS)
    "trend_score": "float64",
    # the impression-click join by request_id (streams.joins): times served, clicks on it
    # in a request that served it, and their ratio smoothed by a Beta(1, 19) prior
    "impression_count": "int64",
    "attributed_click_count": "int64",
    "attributed_ctr": "float64",
    # interactions in the event-time hour ending at interactions_1h_end (epoch ms)
    "interactions_1h": "int64",
    "interactions_1h_end": "int64",
    # co-visitation (streams.folding.COVISIT_*): the item's heaviest neighbours among the
    # items users touched right before or after it, heaviest first (ties by id), their
    # pair counts, and the count of every pair ever (the cosine's norm)
    "covisit_items": "string[]",
    "covisit_weights": "int64[]",
    "covisit_total": "int64",
}

# The Spark job's short window (default 1 hour sliding every 5 minutes).
ITEM_WINDOWS_1H: dict[str, Kind] = {
    "trending_1h": "float64",
    "window_end_1h": "int64",  # epoch ms: which window it is
}

# The Spark job's long window (default 24 hours sliding every hour).
ITEM_WINDOWS_24H: dict[str, Kind] = {
    "trending_24h": "float64",
    "impressions_24h": "int64",
    "clicks_24h": "int64",
    "ctr_24h": "float64",
    "window_end_24h": "int64",
}

# Each user's top catalogue categories over the long window.
USER_INTERESTS: dict[str, Kind] = {
    "interest_categories": "string[]",
    "interest_weights": "float64[]",
    "interests_window_end": "int64",
}

# The item fields a request reads (the API's item table, and the models' context
# features): the counts and the trend, not the join's or the hour window's bookkeeping.
RECOMMEND_ITEM: tuple[str, ...] = (
    "interaction_count",
    "click_count",
    "purchase_count",
    "last_event_time",
    "trend_score",
)

# The co-visitation fields a request reads: the recall channel and the ranking feature
# (serving.cascade), read with the item table but not by training's point-in-time lookups.
RECOMMEND_COVISIT: tuple[str, ...] = ("covisit_items", "covisit_weights", "covisit_total")
