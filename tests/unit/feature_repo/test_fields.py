"""Every writer and reader of a feature view agrees with its one declaration."""

from __future__ import annotations

from typing import Any

import pytest

from feature_repo import definitions, fields
from streams.events import Interaction
from streams.folding import ItemState, UserState, fold_interaction, item_rows, user_rows
from streams.spark.job import item_long_columns, item_short_columns, user_interest_columns
from training.data.offline_features import ITEM_STATS_SCHEMA, USER_RECENT_SCHEMA

VIEWS = {
    "user_recent": ("user_id", fields.USER_RECENT),
    "item_stats": ("item_id", fields.ITEM_STATS),
    "item_windows_1h": ("item_id", fields.ITEM_WINDOWS_1H),
    "item_windows_24h": ("item_id", fields.ITEM_WINDOWS_24H),
    "user_interests": ("user_id", fields.USER_INTERESTS),
}


def _row_columns(view: str) -> list[str]:
    key, declared = VIEWS[view]
    return [key, *declared, fields.ROW_TIME]


@pytest.mark.parametrize("view", sorted(VIEWS))
def test_feast_view_has_exactly_the_declared_fields(view: str) -> None:
    feast_view = getattr(definitions, view)
    names = [f.name for f in feast_view.schema if f.name not in feast_view.join_keys]
    assert sorted(names) == sorted(VIEWS[view][1])  # Feast keeps its own order


def test_worker_rows_fill_every_declared_field() -> None:
    user = UserState()
    fold_interaction(
        user, Interaction(user_id="u", item_id="i", action="view", event_time=10**12), keep=5
    )
    assert list(user_rows([("u", user)])) == _row_columns("user_recent")
    assert list(item_rows([("i", ItemState())])) == _row_columns("item_stats")


def test_spark_rows_fill_every_declared_field() -> None:
    item: dict[str, Any] = {"item_id": "i", "trending": 1.0, "impressions": 2, "clicks": 1}
    user: dict[str, Any] = {"user_id": "u", "shares": [{"category": "Drama", "share": 1.0}]}
    assert list(item_short_columns([item], 1, 2)) == _row_columns("item_windows_1h")
    assert list(item_long_columns([item], 1, 2)) == _row_columns("item_windows_24h")
    assert list(user_interest_columns(3)([user], 1, 2)) == _row_columns("user_interests")


def test_offline_batch_sources_have_the_declared_columns() -> None:
    assert USER_RECENT_SCHEMA.names == _row_columns("user_recent")
    assert ITEM_STATS_SCHEMA.names == _row_columns("item_stats")


def test_feature_services_read_declared_fields() -> None:
    for service in (definitions.recommend_user_v1, definitions.recommend_item_v1):
        for projection in service.feature_view_projections:
            declared = VIEWS[projection.name][1]
            assert {f.name for f in projection.features} <= set(declared)
