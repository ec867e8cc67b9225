"""The experiment counters' script on the real Redis: the join by request id, clicks read
before their list, repeats, interleaving wins and conversions (``streams.experiments``,
``streamrec.infra.experiments``)."""

from __future__ import annotations

import uuid

from streamrec.infra.experiments import RedisExperimentFold, RedisExperimentStore
from streamrec.settings import Settings
from streams.events import Click, Interaction, RecommendationServed, RecommendedItem
from streams.experiments import INTERLEAVED, fold_calls

T0 = 1_700_000_000_000


def served(
    request_id: str, user: str, variant: str, items: list[tuple[str, str | None]]
) -> RecommendationServed:
    return RecommendationServed(
        request_id=request_id,
        user_id=user,
        variant=variant,
        model_version="m",
        experiment="exp",
        event_time=T0,
        items=tuple(
            RecommendedItem(item_id=item, rank=rank, score=0.0, reason="", variant=team)
            for rank, (item, team) in enumerate(items, start=1)
        ),
    )


def click(request_id: str, user: str, item: str, at: int = T0 + 1000) -> Click:
    return Click(request_id=request_id, user_id=user, item_id=item, rank=1, event_time=at)


def test_ab_counters_join_clicks_once_in_any_order(redis_settings: Settings) -> None:
    url, prefix = redis_settings.redis_connection_url or "", redis_settings.topic_prefix
    fold = RedisExperimentFold(url, prefix)
    store = RedisExperimentStore(url, prefix)
    first = served("r1", "u1", "a", [("i1", "a"), ("i2", "a")])
    early = click("r2", "u2", "i3")  # read before its list
    second = served("r2", "u2", "b", [("i3", "b"), ("i4", "b")])
    events = [
        first,
        click("r1", "u1", "i1"),
        click("r1", "u1", "i2"),
        early,
        second,
        click("r1", "u1", "i9"),  # not served: not attributed
        click("r1", "u1", "i1", at=T0 + 2 * 3600 * 1000),  # past the window
        served("r3", "u3", "default", [("i1", None)]).model_copy(update={"experiment": None}),
        Interaction(user_id="u1", item_id="i2", action="cart", event_time=T0 + 5000),
        Interaction(user_id="u1", item_id="i2", action="purchase", event_time=T0 + 6000),
        Interaction(user_id="u2", item_id="i4", action="view", event_time=T0 - 5000),  # before
    ]
    moved = fold.fold(fold_calls(events))
    assert ("exp", "a", "impressions", 1) in moved
    # the same events again (a redelivery) change nothing
    assert fold.fold(fold_calls(events)) == []
    assert fold.fold(fold_calls([click("r1", "u1", "i1")])) == []  # a second click, new id
    counts = store.counts("exp")
    assert counts["a"] == {
        "impressions": 1,
        "item_impressions": 2,
        "clicks": 1,
        "item_clicks": 2,
        "conversions": 1,
    }
    assert counts["b"] == {"impressions": 1, "item_impressions": 2, "clicks": 1, "item_clicks": 1}


def test_interleaving_credits_each_click_to_its_team(redis_settings: Settings) -> None:
    url, prefix = redis_settings.redis_connection_url or "", redis_settings.topic_prefix
    fold = RedisExperimentFold(url, prefix)
    store = RedisExperimentStore(url, prefix)
    request = uuid.uuid4().hex
    list_ = served(request, "u", INTERLEAVED, [("x", "a"), ("y", "b"), ("z", "a")])
    fold.fold(fold_calls([list_, click(request, "u", "y")]))
    assert store.counts("exp")["b"]["wins"] == 1
    # two clicks for a: the request's winner moves from b to a
    fold.fold(fold_calls([click(request, "u", "x"), click(request, "u", "z")]))
    counts = store.counts("exp")
    assert counts["a"]["wins"] == 1 and counts["b"]["wins"] == 0
    assert counts["a"]["item_clicks"] == 2 and counts["b"]["item_clicks"] == 1
    assert counts[INTERLEAVED]["impressions"] == 1
    tie = uuid.uuid4().hex
    fold.fold(
        fold_calls(
            [
                served(tie, "v", INTERLEAVED, [("x", "a"), ("y", "b")]),
                click(tie, "v", "x"),
                click(tie, "v", "y"),
            ]
        )
    )
    counts = store.counts("exp")
    assert counts["="]["wins"] == 1 and counts["a"]["wins"] == 1
    # an explored item (no team) is clicked: it moves no win
    explored = uuid.uuid4().hex
    fold.fold(
        fold_calls(
            [
                served(explored, "w", INTERLEAVED, [("x", "a"), ("r", None), ("y", "b")]),
                click(explored, "w", "r"),
                click(explored, "w", "y"),
            ]
        )
    )
    counts = store.counts("exp")
    assert counts["b"]["wins"] == 1 and counts[INTERLEAVED]["item_clicks"] == 1


def test_definitions_round_trip_and_bump_the_version(redis_settings: Settings) -> None:
    store = RedisExperimentStore(
        redis_settings.redis_connection_url or "", redis_settings.topic_prefix
    )
    before = store.version()
    store.save("e", {"name": "e"})
    assert store.load() == {"e": {"name": "e"}} and store.version() == before + 1
    assert store.delete("e") and not store.delete("e")
    assert store.load() == {}
