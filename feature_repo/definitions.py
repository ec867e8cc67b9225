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
    ],
    online=True,
    source=item_stats_push,
)

# What /recommend reads per request for the user; versioned so models can pin it.
recommend_user_v1 = FeatureService(name="recommend_user_v1", features=[user_recent])

# Item features the API keeps in process and refreshes from the store.
recommend_item_v1 = FeatureService(name="recommend_item_v1", features=[item_stats])
