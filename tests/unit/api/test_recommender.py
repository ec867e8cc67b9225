"""The baseline the API serves without a champion: the live item-kNN over tiny logs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from api.ports import ItemStats, RecentItems
from api.serving.baseline import (
    POPULAR_REASON,
    BaselineIndex,
    PopularityRanking,
    Scored,
    build_index,
    popularity_score,
    reason,
    recommend,
)

DAY = 86_400_000


def events_of(sequences: dict[str, list[str]], start: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"user_id": user, "item_id": item, "event_time": start + 1_000 * step}
            for user, items in sequences.items()
            for step, item in enumerate(items)
        ]
    )


def recent(*items: str, seen: tuple[str, ...] = ()) -> RecentItems:
    return RecentItems(items=items, times=tuple(range(len(items))), seen=frozenset(seen))


# a and b go together (three users), a and c once; x with c; p is popular on its own.
LOG = events_of(
    {
        "u1": ["a", "b"],
        "u2": ["a", "b"],
        "u3": ["a", "b", "c"],
        "u4": ["x", "c"],
        "u5": ["p"],
        "u6": ["p"],
        "u7": ["p"],
        "u8": ["p"],
    }
)
POPULAR = PopularityRanking.from_scores({"p": 100.0, "c": 50.0, "a": 10.0, "b": 1.0})


def index_of(events: pd.DataFrame = LOG) -> BaselineIndex:
    return build_index(events, ["a", "b", "c", "x", "p"], clock_ms=int(events.event_time.max()))


def test_co_occurrence_is_cosine_over_distinct_users() -> None:
    index = index_of()
    assert index.cooccurrence is not None
    a, b, c = (index.item_index[i] for i in "abc")
    assert index.cooccurrence.users_per_item[[a, b, c]].tolist() == [3, 3, 2]
    picks = recommend(recent("a"), 2, index=index, popularity=POPULAR)
    # cosine(a, b) = 3 / sqrt(3 * 3) = 1; cosine(a, c) = 1 / sqrt(3 * 2)
    assert [(s.item_id, s.because_of) for s in picks] == [("b", "a"), ("c", "a")]
    assert [s.score for s in picks] == pytest.approx([1.0, 1 / 6**0.5])


def test_a_repeated_pair_counts_once() -> None:
    twice = pd.concat([LOG, LOG.assign(event_time=LOG.event_time + 10)], ignore_index=True)
    once, again = index_of(), index_of(twice)
    assert once.cooccurrence is not None and again.cooccurrence is not None
    assert (once.cooccurrence.counts != again.cooccurrence.counts).nnz == 0


def test_cold_start_is_fourteen_day_popularity() -> None:
    old = events_of({"o1": ["a"], "o2": ["a"], "o3": ["a"]}, start=0)
    new = events_of({"n1": ["p"], "n2": ["p"], "n3": ["c"]}, start=30 * DAY)
    index = index_of(pd.concat([old, new], ignore_index=True))
    picks = recommend(None, 3, index=index, popularity=POPULAR)
    # "a" is the all-time favourite but not one of the last 14 days.
    assert [s.item_id for s in picks][:2] == ["p", "c"]
    assert all(s.because_of is None for s in picks)
    assert reason(picks[0], {}) == POPULAR_REASON


def test_touched_items_are_never_recommended() -> None:
    picks = recommend(recent("a", seen=("b", "p")), 10, index=index_of(), popularity=POPULAR)
    ids = [s.item_id for s in picks]
    assert not {"a", "b", "p"} & set(ids)
    assert ids[0] == "c"


def test_newer_items_weigh_more_and_name_the_reason() -> None:
    index = index_of(events_of({"u1": ["old", "o"], "u2": ["new", "n"]}))
    picks = recommend(recent("new", "old"), 2, index=index, popularity=POPULAR)
    assert [(s.item_id, s.because_of) for s in picks] == [("n", "new"), ("o", "old")]


def test_the_recent_item_that_contributed_most_is_the_reason() -> None:
    # c: from x cosine 1/sqrt(1*2) * 0.9 (second newest), from a 1/sqrt(3*2) (newest).
    picks = recommend(recent("a", "x"), 5, index=index_of(), popularity=POPULAR)
    by_id = {s.item_id: s for s in picks}
    assert by_id["c"].because_of == "x"
    assert by_id["b"].because_of == "a"


def test_before_the_log_is_read_the_online_counts_serve() -> None:
    picks = recommend(recent("p"), 2, index=BaselineIndex(), popularity=POPULAR)
    assert [s.item_id for s in picks] == ["c", "a"]


def test_k_bounds_the_list() -> None:
    assert len(recommend(recent("a"), 1, index=index_of(), popularity=POPULAR)) == 1


def test_reason_names_the_title_or_the_id() -> None:
    assert reason(Scored("b", 1.0, "a"), {"a": "Alien"}) == "because you interacted with Alien"
    assert reason(Scored("b", 1.0, "a"), {}) == "because you interacted with a"
    assert reason(Scored("p", 0.1, None), {"a": "Alien"}) == POPULAR_REASON


def test_popularity_weighs_purchases_and_clicks() -> None:
    viewed = ItemStats(interaction_count=10)
    bought = ItemStats(interaction_count=10, click_count=2, purchase_count=2)
    assert popularity_score(bought) > popularity_score(viewed)
    ranking = PopularityRanking.from_scores({"v": popularity_score(viewed), "b": 16.0, "z": 0})
    assert ranking.items == ("b", "v")  # zero-score items are not "popular"
    assert ranking.scores["b"] == 1.0


def test_empty_log_gives_an_empty_index() -> None:
    empty = pd.DataFrame({"user_id": [], "item_id": [], "event_time": np.array([], np.int64)})
    index = build_index(empty, ["a"], clock_ms=0)
    assert len(index) == 0
    assert [s.item_id for s in recommend(None, 3, index=index, popularity=POPULAR)] == ["a"]
