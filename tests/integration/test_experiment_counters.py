"""The experiment counters' script on the real Redis: the join by request id, clicks read
before their list, repeats, interleaving wins and conversions (``streams.experiments``,
``streamrec.infra.experiments``); and the counters rebuilt from the log by backfill
(``streams.experiment_backfill``) equal the worker's."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import redis

from streamrec.infra.experiments import RedisExperimentFold, RedisExperimentStore
from streamrec.infra.feast_store import apply_definitions, open_store
from streamrec.infra.lag import wait_until_caught_up
from streamrec.infra.processes import run_streamrec, streamrec_process
from streamrec.settings import Settings
from streams.events import (
    Click,
    Event,
    Interaction,
    RecommendationServed,
    RecommendedItem,
    Topics,
)
from streams.experiments import INTERLEAVED, fold_calls
from streams.producer import EventProducer

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


def test_an_interaction_folded_before_its_list_still_converts(redis_settings: Settings) -> None:
    """The worker's agents read interactions and served lists independently: a click's
    Interaction can be folded before the list it was on. While an experiment runs, it
    converts when the list arrives, as it would have after it; one dated before the list
    does not, and the conversion is counted once."""
    url, prefix = redis_settings.redis_connection_url or "", redis_settings.topic_prefix
    fold = RedisExperimentFold(url, prefix)
    store = RedisExperimentStore(url, prefix)
    store.save("exp", {"name": "exp"})  # an experiment runs
    after = Interaction(user_id="u", item_id="i1", action="click", event_time=T0 + 500)
    before = Interaction(user_id="u", item_id="i2", action="view", event_time=T0 - 500)
    fold.fold(fold_calls([after, before]))
    fold.fold(fold_calls([served("r", "u", "a", [("i1", "a"), ("i2", "a")])]))
    assert store.counts("exp")["a"]["conversions"] == 1
    again = Interaction(user_id="u", item_id="i1", action="view", event_time=T0 + 900)
    fold.fold(fold_calls([again]))
    assert store.counts("exp")["a"]["conversions"] == 1
    # the same order with no experiment defined: nothing is remembered, nothing converts
    store.delete("exp")
    fold.fold(fold_calls([after.model_copy(update={"user_id": "w", "event_id": "e2"})]))
    fold.fold(fold_calls([served("r2", "w", "a", [("i1", "a")])]))
    assert store.counts("exp")["a"]["conversions"] == 1


def test_definitions_round_trip_and_bump_the_version(redis_settings: Settings) -> None:
    store = RedisExperimentStore(
        redis_settings.redis_connection_url or "", redis_settings.topic_prefix
    )
    before = store.version()
    store.save("e", {"name": "e"})
    assert store.load() == {"e": {"name": "e"}} and store.version() == before + 1
    assert store.delete("e") and not store.delete("e")
    assert store.load() == {}


def produce_experiment_log(settings: Settings, seed: int, requests: int = 80) -> list[Event]:
    """Served lists of an A/B and an interleaved experiment (and some outside any), clicks
    on them (some written before their list, some repeated, some on items not served, some
    past the attribution window); then, in a second call, interactions. Returns the lists
    and clicks sent."""
    rng = random.Random(seed)
    sent: list[Event] = []
    with EventProducer(settings.bootstrap_servers, Topics(settings.topic_prefix)) as producer:
        for n in range(requests):
            user, request = f"u{rng.randrange(20)}", f"req{n}"
            items = rng.sample([f"i{k}" for k in range(30)], 5)
            kind = rng.choice(["ab", "ab", "il", "none"])
            if kind == "il":
                list_ = served(request, user, INTERLEAVED, [(i, rng.choice("ab")) for i in items])
                list_ = list_.model_copy(update={"experiment": "il"})
            else:
                variant = rng.choice("ab")
                list_ = served(request, user, variant, [(i, variant) for i in items])
                list_ = list_.model_copy(update={"experiment": "ab"})
                if kind == "none":
                    list_ = list_.model_copy(update={"experiment": None, "variant": "default"})
            list_ = list_.model_copy(update={"event_time": T0 + 1000 * n})
            clicks = [
                click(request, user, rng.choice(items), at=T0 + 1000 * n + 500)
                for _ in range(rng.choice([0, 0, 1, 2, 3]))
            ]
            if rng.random() < 0.2:
                clicks.append(click(request, user, "i99", at=T0 + 1000 * n + 600))  # not served
            if rng.random() < 0.1:
                late = T0 + 1000 * n + 2 * 3600 * 1000  # past the window
                clicks.append(click(request, user, items[0], at=late))
            early = rng.random() < 0.25  # the click is in the log before its list
            for event in [*clicks, list_] if early else [list_, *clicks]:
                producer.send(event)
                sent.append(event)
    return sent


def produce_interactions(settings: Settings, sent: list[Event], seed: int) -> int:
    """Interactions with recommended items, after and before their lists, and with others."""
    rng = random.Random(seed)
    lists = [e for e in sent if isinstance(e, RecommendationServed)]
    count = 0
    with EventProducer(settings.bootstrap_servers, Topics(settings.topic_prefix)) as producer:
        for list_ in lists:
            for item in list_.items:
                if rng.random() < 0.3:
                    when = list_.event_time + rng.choice([-5000, 2000, 60_000])
                    producer.send(
                        Interaction(
                            user_id=list_.user_id,
                            item_id=item.item_id,
                            action="view",
                            event_time=when,
                        )
                    )
                    count += 1
        for n in range(30):
            producer.send(
                Interaction(user_id=f"u{n % 20}", item_id="i77", action="view", event_time=T0)
            )
            count += 1
    return count


def test_backfill_rebuilds_the_worker_s_counters_from_the_log(
    live_settings: Settings, tmp_path: Path
) -> None:
    """The worker folds a log; the counters are wiped; `streamrec backfill --experiments`
    folds the log again with the same calls and script, and gets every counter back."""
    settings = live_settings
    apply_definitions(open_store(settings))
    url, prefix = settings.redis_connection_url or "", settings.topic_prefix
    store = RedisExperimentStore(url, prefix)
    group = f"{prefix}worker"
    sent = produce_experiment_log(settings, seed=3)
    log = tmp_path / "worker.log"
    with streamrec_process(settings, "worker", log=log):
        wait_until_caught_up(settings.bootstrap_servers, group, 180)
        # interactions after the lists are folded: the order a live user makes them in
        produce_interactions(settings, sent, seed=4)
        wait_until_caught_up(settings.bootstrap_servers, group, 180)
    folded = {name: store.counts(name) for name in ("ab", "il")}
    assert all(folded["ab"][v]["impressions"] > 5 for v in "ab"), folded
    assert sum(folded["ab"][v].get("conversions", 0) for v in "ab") > 5, folded
    assert sum(folded["il"][v].get("wins", 0) for v in "ab") > 3, folded
    assert store.counts("none") == {}

    client = redis.Redis.from_url(url)
    for key in client.scan_iter(f"{prefix}exp:counts:*"):
        client.delete(key)
    assert store.counts("ab") == {}
    # the join state and done-marks are left: backfill must not be fooled by them
    output = run_streamrec(settings, "backfill", "--experiments")
    assert "experiment counters refolded" in output, output
    assert {name: store.counts(name) for name in ("ab", "il")} == folded
    lists = sum(isinstance(e, RecommendationServed) and e.experiment is not None for e in sent)
    assert f"from {lists:,} experiment lists" in output, output
