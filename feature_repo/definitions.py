"""Feast declarations: entities, sources, feature views and services.

Batch sources are Parquet files under the data directory (Feast resolves these relative
paths against the store's repo_path, which streamrec sets to STREAMREC_DATA_DIR). Each
push source wraps its batch source, so the stream worker writes fresh rows online while
the offline files stay the history that training reads.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource
from feast.types import Array, Float64, Int64, String
from feast.value_type import ValueType

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
    schema=[
        Field(name="recent_items", dtype=Array(String)),
        Field(name="recent_times", dtype=Array(Int64)),  # epoch ms, parallel to recent_items
        Field(name="interaction_count", dtype=Int64),
        Field(name="last_event_time", dtype=Int64),
    ],
    online=True,
    source=user_recent_push,
)

# Running popularity per item: the cold-start list and the popularity context feature.
item_stats = FeatureView(
    name="item_stats",
    entities=[item],
    ttl=timedelta(days=3650),
    schema=[
        Field(name="interaction_count", dtype=Int64),
        Field(name="click_count", dtype=Int64),
        Field(name="purchase_count", dtype=Int64),
        Field(name="last_event_time", dtype=Int64),
        # decayed interaction count as of last_event_time (streams.folding.TREND_HALF_LIFE_MS)
        Field(name="trend_score", dtype=Float64),
        # the impression-click join by request_id (streams.joins): times served, clicks on
        # it in a request that served it, and their ratio smoothed by a Beta(1, 19) prior
        Field(name="impression_count", dtype=Int64),
        Field(name="attributed_click_count", dtype=Int64),
        Field(name="attributed_ctr", dtype=Float64),
        # interactions in the event-time hour ending at interactions_1h_end (epoch ms)
        Field(name="interactions_1h", dtype=Int64),
        Field(name="interactions_1h_end", dtype=Int64),
    ],
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
    schema=[
        Field(name="trending_1h", dtype=Float64),
        Field(name="window_end_1h", dtype=Int64),
    ],
    online=True,
    source=item_windows_1h_push,
)

# The day's view of an item (default 24 hours sliding every hour): trending score, and the
# click-through rate of its impressions (items served in recommendations) and clicks.
item_windows_24h = FeatureView(
    name="item_windows_24h",
    entities=[item],
    ttl=timedelta(days=3650),
    schema=[
        Field(name="trending_24h", dtype=Float64),
        Field(name="impressions_24h", dtype=Int64),
        Field(name="clicks_24h", dtype=Int64),
        Field(name="ctr_24h", dtype=Float64),
        Field(name="window_end_24h", dtype=Int64),
    ],
    online=True,
    source=item_windows_24h_push,
)

# Each user's top catalogue categories over the long window, weights summing to at most 1
# (the categories beyond the top few hold the rest).
user_interests = FeatureView(
    name="user_interests",
    entities=[user],
    ttl=timedelta(days=3650),
    schema=[
        Field(name="interest_categories", dtype=Array(String)),
        Field(name="interest_weights", dtype=Array(Float64)),
        Field(name="interests_window_end", dtype=Int64),
    ],
    online=True,
    source=user_interests_push,
)

# What /recommend reads per request for the user; versioned so models can pin it.
recommend_user_v1 = FeatureService(name="recommend_user_v1", features=[user_recent])

# Item features the API keeps in process and refreshes from the store.
recommend_item_v1 = FeatureService(name="recommend_item_v1", features=[item_stats])

# The Spark job's windowed item features, both windows in one read.
item_windows_v1 = FeatureService(
    name="item_windows_v1", features=[item_windows_1h, item_windows_24h]
)

# The Spark job's per-user category interests.
user_interests_v1 = FeatureService(name="user_interests_v1", features=[user_interests])
