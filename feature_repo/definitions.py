"""Feast declarations: entities, sources, feature views and services.

Batch sources are Parquet files under the data directory (Feast resolves these relative
paths against the store's repo_path, which streamrec sets to STREAMREC_DATA_DIR). Each
push source wraps its batch source, so the stream worker writes fresh rows online while
the offline files stay the history that training reads.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource
from feast.types import Array, FeastType, Float64, Int64, String
from feast.value_type import ValueType

from feature_repo import fields

_TYPES: dict[str, FeastType] = {
    "int64": Int64,
    "float64": Float64,
    "string[]": Array(String),
    "int64[]": Array(Int64),
    "float64[]": Array(Float64),
}


def _schema(declared: dict[str, fields.Kind]) -> list[Field]:
    """Feast fields of one view, from its single declaration in ``fields.py``."""
    return [Field(name=name, dtype=_TYPES[kind]) for name, kind in declared.items()]


# A shopper or reader; Amazon and MovieLens ids are both kept as strings.
user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)

# A product, book or film.
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.STRING)

# History of each user's recent-items state, one row per update (training reads it).
user_recent_source = FileSource(
    name="user_recent_file",
    path="features/user_recent.parquet",
    timestamp_field="event_timestamp",
)

# The worker pushes each user's new recent-items state here as events arrive.
user_recent_push = PushSource(name="user_recent_push", batch_source=user_recent_source)

# History of each item's running counts.
item_stats_source = FileSource(
    name="item_stats_file",
    path="features/item_stats.parquet",
    timestamp_field="event_timestamp",
)

# The worker pushes each item's new running counts here.
item_stats_push = PushSource(name="item_stats_push", batch_source=item_stats_source)

# What the user did last, newest first: recall blends these items, ranking attends to them.
user_recent = FeatureView(
    name="user_recent",
    entities=[user],
    ttl=timedelta(days=3650),
    schema=_schema(fields.USER_RECENT),
    online=True,
    source=user_recent_push,
)

# Running popularity per item: the cold-start list and the popularity context feature.
item_stats = FeatureView(
    name="item_stats",
    entities=[item],
    ttl=timedelta(days=3650),
    schema=_schema(fields.ITEM_STATS),
    online=True,
    source=item_stats_push,
)

# History of the Spark job's short-window item rows (`streamrec spark`).
item_windows_1h_source = FileSource(
    name="item_windows_1h_file",
    path="features/item_windows_1h.parquet",
    timestamp_field="event_timestamp",
)

# The Spark job pushes each item's current short-window row here from foreachBatch.
item_windows_1h_push = PushSource(name="item_windows_1h_push", batch_source=item_windows_1h_source)

# History of the Spark job's long-window item rows.
item_windows_24h_source = FileSource(
    name="item_windows_24h_file",
    path="features/item_windows_24h.parquet",
    timestamp_field="event_timestamp",
)

# The Spark job pushes each item's current long-window row here.
item_windows_24h_push = PushSource(
    name="item_windows_24h_push", batch_source=item_windows_24h_source
)

# History of the Spark job's per-user category interests.
user_interests_source = FileSource(
    name="user_interests_file",
    path="features/user_interests.parquet",
    timestamp_field="event_timestamp",
)

# The Spark job pushes each user's current interest vector here.
user_interests_push = PushSource(name="user_interests_push", batch_source=user_interests_source)

# What is hot right now: action-weighted interactions in the trailing short window (default
# 1 hour sliding every 5 minutes); window_end_1h (epoch ms) says which window it is.
item_windows_1h = FeatureView(
    name="item_windows_1h",
    entities=[item],
    ttl=timedelta(days=3650),
    schema=_schema(fields.ITEM_WINDOWS_1H),
    online=True,
    source=item_windows_1h_push,
)

# The day's view of an item (default 24 hours sliding every hour): trending score, and the
# click-through rate of its impressions (items served in recommendations) and clicks.
item_windows_24h = FeatureView(
    name="item_windows_24h",
    entities=[item],
    ttl=timedelta(days=3650),
    schema=_schema(fields.ITEM_WINDOWS_24H),
    online=True,
    source=item_windows_24h_push,
)

# Each user's top catalogue categories over the long window, weights summing to at most 1
# (the categories beyond the top few hold the rest).
user_interests = FeatureView(
    name="user_interests",
    entities=[user],
    ttl=timedelta(days=3650),
    schema=_schema(fields.USER_INTERESTS),
    online=True,
    source=user_interests_push,
)

# What /recommend reads per request for the user; versioned so models can pin it.
recommend_user_v1 = FeatureService(name="recommend_user_v1", features=[user_recent])

# Item features the API keeps in process and refreshes from the store.
recommend_item_v1 = FeatureService(
    name="recommend_item_v1", features=[item_stats[list(fields.RECOMMEND_ITEM)]]
)

# Each item's co-visited neighbours: the cascade's co-visitation channel, read with the
# item table (not by training's point-in-time lookups, which do not use it).
recommend_covisit_v1 = FeatureService(
    name="recommend_covisit_v1", features=[item_stats[list(fields.RECOMMEND_COVISIT)]]
)

# The Spark job's windowed item features, both windows in one read.
item_windows_v1 = FeatureService(
    name="item_windows_v1", features=[item_windows_1h, item_windows_24h]
)

# The Spark job's per-user category interests.
user_interests_v1 = FeatureService(name="user_interests_v1", features=[user_interests])

# What the cockpit's "trending now" reads per item: the worker's event-time hour and the
# Spark job's 1-hour window.
cockpit_item_v1 = FeatureService(
    name="cockpit_item_v1",
    features=[item_stats[["interactions_1h", "interactions_1h_end"]], item_windows_1h],
)
