"""The heuristic recommender: co-occurrence counting and scoring, on tiny logs."""

from __future__ import annotations

import pandas as pd
import pytest

from api.ports import ItemStats
from api.serving.heuristic import (
    POPULAR_REASON,
    CooccurrenceIndex,
    PopularityRanking,
    Scored,
    build_cooccurrence,
    popularity_score,
    reason,
    recommend,
)


def events_of(sequences: dict[str, list[str]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"user_id": user, "item_id": item, "event_time": 1_000 * step}
            for user, items in sequences.items()
            for step, item in enumerate(items)
        ]
    )


def neighbour_ids(index: CooccurrenceIndex, item: str) -> list[str]:
    return [neighbour for neighbour, _ in index.neighbours.get(item, ())]


def test_items_within_the_window_are_neighbours_both_ways() -> None:
    index = build_cooccurrence(events_of({"u": ["a", "b", "c"]}), window=1, min_count=1)
    assert neighbour_ids(index, "a") == ["b"]
    assert sorted(neighbour_ids(index, "b")) == ["a", "c"]
    assert neighbour_ids(index, "c") == ["b"]


def test_items_beyond_the_window_are_not_neighbours() -> None:
    index = build_cooccurrence(events_of({"u": ["a", "b", "c", "d"]}), window=2, min_count=1)
    assert "d" not in neighbour_ids(index, "a")
    assert "c" in neighbour_ids(index, "a")


def test_sequences_follow_event_time_not_row_order() -> None:
    events = pd.DataFrame(
        {"user_id": ["u", "u", "u"], "item_id": ["c", "a", "b"], "event_time": [3, 1, 2]}
    )
    index = build_cooccurrence(events, window=1, min_count=1)
    # In time order the sequence is a, b, c: a and c are two steps apart.
    assert neighbour_ids(index, "a") == ["b"]


def test_users_sequences_are_not_joined() -> None:
    # u1 ends with "a", u2 starts with "z": adjacent rows, different users.
    index = build_cooccurrence(events_of({"u1": ["b", "a"], "u2": ["z", "y"]}), min_count=1)
    assert "z" not in neighbour_ids(index, "a")


def test_back_to_back_repeats_count_once() -> None:
    # view, click, purchase of "a" then "b": one step apart, not three.
    index = build_cooccurrence(events_of({"u": ["a", "a", "a", "b"]}), window=1, min_count=1)
    assert neighbour_ids(index, "a") == ["b"]
    assert "a" not in neighbour_ids(index, "a")


def test_rare_pairs_below_min_count_are_dropped() -> None:
    events = events_of({"u1": ["a", "b"], "u2": ["a", "b"], "u3": ["a", "c"]})
    index = build_cooccurrence(events, min_count=2)
    assert neighbour_ids(index, "a") == ["b"]


def test_neighbours_are_ranked_by_normalised_weight_and_cut_at_top_n() -> None:
    sequences = {f"u{n}": ["a", "b"] for n in range(3)}
    sequences |= {"v1": ["a", "c"], "w1": ["a", "d"]}
    index = build_cooccurrence(events_of(sequences), min_count=1, top_n=2)
    assert neighbour_ids(index, "a")[0] == "b"
    assert len(neighbour_ids(index, "a")) == 2
    weights = [w for _, w in index.neighbours["a"]]
    assert weights == sorted(weights, reverse=True)
    # count / sqrt(freq(a) * freq(b)) = 3 / sqrt(5 * 3)
    assert weights[0] == pytest.approx(3 / (5 * 3) ** 0.5)


def test_empty_log_gives_empty_index() -> None:
    empty = pd.DataFrame({"user_id": [], "item_id": [], "event_time": []})
    assert len(build_cooccurrence(empty)) == 0


INDEX = CooccurrenceIndex(
    neighbours={
        "a": (("b", 0.9), ("c", 0.2)),
        "x": (("c", 0.5), ("a", 0.4)),
    }
)
POPULAR = PopularityRanking.from_scores({"p": 100.0, "c": 50.0, "a": 10.0, "b": 1.0})


def test_cold_start_is_the_popularity_ranking() -> None:
    picks = recommend((), 3, index=INDEX, popularity=POPULAR)
    assert [s.item_id for s in picks] == ["p", "c", "a"]
    assert all(s.because_of is None for s in picks)


def test_seen_items_are_never_recommended() -> None:
    picks = recommend(("x", "a"), 10, index=INDEX, popularity=POPULAR)
    ids = [s.item_id for s in picks]
    assert "a" not in ids and "x" not in ids
    assert set(ids) == {"b", "c", "p"}


def test_items_the_user_already_has_are_excluded_even_when_no_longer_recent() -> None:
    picks = recommend(("a",), 10, index=INDEX, popularity=POPULAR, exclude={"b", "p"})
    # b (a's neighbour) and p (the most popular) are had; a is recent: only c is left.
    assert [s.item_id for s in picks] == ["c"]


def test_neighbours_of_recent_items_outrank_popular_items() -> None:
    picks = recommend(("a",), 3, index=INDEX, popularity=POPULAR)
    assert [s.item_id for s in picks][:2] == ["b", "c"]
    assert picks[0].because_of == "a"
    assert picks[2] == Scored("p", pytest.approx(0.1), None)  # type: ignore[arg-type]


def test_the_recent_item_that_contributed_most_is_the_reason() -> None:
    # "c" gets 0.2 from "a" and 0.5 * 0.8 from "x" (second newest): "x" contributed most.
    picks = recommend(("a", "x"), 5, index=INDEX, popularity=POPULAR)
    by_id = {s.item_id: s for s in picks}
    assert by_id["c"].because_of == "x"
    assert by_id["b"].because_of == "a"


def test_newer_items_weigh_more() -> None:
    index = CooccurrenceIndex(neighbours={"old": (("o", 1.0),), "new": (("n", 1.0),)})
    picks = recommend(("new", "old"), 2, index=index, popularity=PopularityRanking())
    assert [s.item_id for s in picks] == ["n", "o"]


def test_k_bounds_the_list() -> None:
    assert len(recommend(("a",), 1, index=INDEX, popularity=POPULAR)) == 1


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
