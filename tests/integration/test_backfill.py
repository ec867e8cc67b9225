"""Backfill against the real broker and Redis: wipe the online store, rebuild it from the
log, and get back every feature value the worker had written."""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from feast import FeatureStore

from streamrec.infra.feast_store import apply_definitions, feast_project, open_store
from streamrec.infra.lag import wait_until_caught_up
from streamrec.infra.processes import run_streamrec, streamrec_process
from streamrec.infra.seen import RedisSeenItems, seen_key
from streamrec.settings import Settings
from streams import folding
from streams.backfill import run_backfill
from streams.events import (
    ACTIONS,
    Click,
    Interaction,
    RecommendationServed,
    RecommendedItem,
    Topics,
)
from streams.joins import attributable
from streams.producer import EventProducer
from streams.sinks import InMemoryChangeNotifier, InMemoryFeatureSink
from tests.support import wait_until

T0 = 1_700_000_000_000
USER_FEATURES = ["recent_items", "recent_times", "interaction_count", "last_event_time"]
ITEM_FEATURES = list(folding.ITEM_FEATURES)  # every field of the item_stats view


def produce_log(settings: Settings, users: int, items: int, events: int, seed: int) -> list[Any]:
    """Interactions (late, out-of-order and same-millisecond ones included), clicks,
    served recommendations with clicks on them (some sent before their recommendation,
    some on items it did not serve) and a few bad records; returns the good events sent."""
    rng = random.Random(seed)
    topics = Topics(settings.topic_prefix)
    sent: list[Any] = []
    with EventProducer(settings.bootstrap_servers, topics) as producer:
        for n in range(events):
            # mostly moving forward, sometimes hours late, often on the same millisecond
            now = T0 + 1000 * (n // 3)
            when = now - (rng.random() < 0.1) * rng.randrange(3_600_000)
            user, item = f"u{rng.randrange(users)}", f"i{rng.randrange(items)}"
            if rng.random() < 0.05:
                for joined in _served_with_clicks(rng, user, items, f"req{n}", now):
                    producer.send(joined)
                    sent.append(joined)
            event: Interaction | Click = Interaction(
                user_id=user, item_id=item, action=rng.choice(ACTIONS), event_time=when
            )
            if rng.random() < 0.15:
                event = Click(
                    user_id=user, item_id=item, request_id=f"r{n}", rank=1, event_time=when
                )
            producer.send(event)
            sent.append(event)
            if n % 997 == 0:
                producer.send_raw(topics.interactions, user.encode(), b'{"schema": 7}')
        producer.flush()
    return sent


def _served_with_clicks(
    rng: random.Random, user: str, items: int, request_id: str, now: int
) -> list[RecommendationServed | Click]:
    """A served request and 0-3 clicks on it, in the order to send them: a click may go
    first (a reader of both topics can see it before its impression), may be on an item
    the request did not serve, and rarely comes after the attribution window."""
    served = RecommendationServed(
        user_id=user,
        request_id=request_id,
        variant="v",
        model_version="m",
        event_time=now,
        items=tuple(
            RecommendedItem(item_id=item_id, rank=rank, score=1.0, reason="r")
            for rank, item_id in enumerate(
                dict.fromkeys(f"i{rng.randrange(items)}" for _ in range(5)), start=1
            )
        ),
    )
    order: list[RecommendationServed | Click] = [served]
    for _ in range(rng.randrange(4)):
        pick = rng.choice([*served.items, None])
        item_id = pick.item_id if pick is not None else f"i{rng.randrange(items)}"
        click = Click(
            user_id=user,
            request_id=request_id,
            item_id=item_id,
            rank=pick.rank if pick is not None else 1,
            event_time=now + rng.choice([-30_000, 0, 2_000, 20_000, 3_700_000]),
        )
        order.insert(rng.randrange(len(order) + 1), click)
    return order


def want_join_counts(sent: list[Any]) -> tuple[Counter[str], Counter[str]]:
    """Impressions and attributed clicks per item, by the join's rules, from what was sent."""
    served = {e.request_id: e for e in sent if isinstance(e, RecommendationServed)}
    impressions = Counter(i.item_id for e in served.values() for i in e.items)
    attributed: Counter[str] = Counter()
    counted: set[tuple[str, str]] = set()
    for click in (e for e in sent if isinstance(e, Click)):
        request = served.get(click.request_id)
        if request is None or (click.request_id, click.item_id) in counted:
            continue
        if click.item_id in {i.item_id for i in request.items} and attributable(
            request.event_time, click.event_time
        ):
            counted.add((click.request_id, click.item_id))
            attributed[click.item_id] += 1
    return impressions, attributed


def online(store: FeatureStore, view: str, key: str, ids: list[str], names: list[str]) -> Any:
    result = store.get_online_features(
        features=[f"{view}:{name}" for name in names], entity_rows=[{key: i} for i in ids]
    ).to_dict()
    return {
        entity: {name: result[name][row] for name in names}
        for row, entity in enumerate(result[key])
    }


def assert_same_features(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert sorted(got) == sorted(want)
    for entity, row in want.items():
        for name, value in row.items():
            if isinstance(value, float):
                assert math.isclose(got[entity][name], value, rel_tol=1e-9), (entity, name)
            else:
                assert got[entity][name] == value, (entity, name)


def wipe_online_store(settings: Settings) -> int:
    """Delete every online key of this test's Feast project; returns how many."""
    client = redis.Redis.from_url(settings.redis_connection_url or "")
    project = feast_project(settings.topic_prefix).encode()
    keys = list(client.scan_iter(match=b"*" + project, count=1000))
    keys += client.scan_iter(match=seen_key(settings.topic_prefix, "*").encode(), count=1000)
    if keys:
        client.delete(*keys)
    return len(keys)


@dataclass
class LoggedEvents:
    sent: list[Any]  # every good event, interactions and clicks
    interactions: list[Interaction]
    user_ids: list[str]
    item_ids: list[str]
    store: FeatureStore  # this test's Feast store, definitions applied


def logged_events(
    settings: Settings, users: int, items: int, events: int, seed: int
) -> LoggedEvents:
    """`produce_log`, plus the ids to read back and the store to read them from."""
    sent = produce_log(settings, users=users, items=items, events=events, seed=seed)
    interactions = [e for e in sent if isinstance(e, Interaction)]
    store = open_store(settings)
    apply_definitions(store)
    served = {i.item_id for e in sent if isinstance(e, RecommendationServed) for i in e.items}
    return LoggedEvents(
        sent,
        interactions,
        sorted({e.user_id for e in interactions}),
        sorted({e.item_id for e in sent if not isinstance(e, RecommendationServed)} | served),
        store,
    )


def test_backfill_rebuilds_every_online_feature_after_a_wipe(
    live_settings: Settings, tmp_path: Path
) -> None:
    settings = live_settings
    logged = logged_events(settings, users=40, items=60, events=4000, seed=11)
    sent, interactions, store = logged.sent, logged.interactions, logged.store
    user_ids, item_ids = logged.user_ids, logged.item_ids

    log = tmp_path / "worker.log"
    with streamrec_process(settings, "worker", log=log) as worker:
        wait_until_caught_up(settings.bootstrap_servers, f"{settings.topic_prefix}worker", 180)
        want_clicks = Counter(e.item_id for e in sent if isinstance(e, Click))
        want_views = Counter(e.item_id for e in interactions)
        want_impressions, want_attributed = want_join_counts(sent)
        assert sum(want_attributed.values()) > 10 and sum(want_impressions.values()) > 500

        def items_done() -> dict[str, Any] | None:
            rows = online(store, "item_stats", "item_id", item_ids, ITEM_FEATURES)
            got = {
                name: {i: r[name] or 0 for i, r in rows.items()}
                for name in (
                    "click_count",
                    "interaction_count",
                    "impression_count",
                    "attributed_click_count",
                )
            }
            want = {
                name: {i: counts[i] for i in item_ids}
                for name, counts in (
                    ("click_count", want_clicks),
                    ("interaction_count", want_views),
                    ("impression_count", want_impressions),
                    ("attributed_click_count", want_attributed),
                )
            }
            return rows if got == want else None

        before_items = wait_until(items_done, 90, "item features", proc=worker, log=log)
    before_users = online(store, "user_recent", "user_id", user_ids, USER_FEATURES)
    counts = Counter(e.user_id for e in interactions)
    assert {u: r["interaction_count"] for u, r in before_users.items()} == counts
    # The seen sets (streamrec.infra.seen): every item of every user, beyond the 50 recent ones.
    want_seen = {u: frozenset(e.item_id for e in interactions if e.user_id == u) for u in user_ids}
    seen = RedisSeenItems(settings.redis_connection_url or "", settings.topic_prefix)
    assert {u: seen.read(u) for u in user_ids} == want_seen
    assert max(map(len, want_seen.values())) > settings.recent_items_max

    assert wipe_online_store(settings) >= len(user_ids) + len(item_ids)
    wiped = online(store, "user_recent", "user_id", user_ids, ["interaction_count"])
    assert all(row["interaction_count"] is None for row in wiped.values())

    output = run_streamrec(settings, "backfill", "--from-beginning")
    assert f"{len(user_ids):,} users and {len(item_ids):,} items" in output
    assert "rejected" in output and f"{4000 // 997 + 1:,} rejected" in output
    assert f"{sum(want_attributed.values()):,} attributed clicks" in output

    assert_same_features(
        online(store, "user_recent", "user_id", user_ids, USER_FEATURES), before_users
    )
    assert_same_features(
        online(store, "item_stats", "item_id", item_ids, ITEM_FEATURES), before_items
    )
    assert {u: seen.read(u) for u in user_ids} == want_seen


def test_backfill_since_folds_only_the_later_slice(live_settings: Settings) -> None:
    settings = live_settings
    sent = produce_log(settings, users=10, items=20, events=600, seed=5)
    since = sorted(e.event_time for e in sent)[len(sent) // 2]
    sink, notifier = InMemoryFeatureSink(), InMemoryChangeNotifier()
    report = run_backfill(settings, sink, since_ms=since, notifier=notifier)
    later = [e for e in sent if e.event_time >= since]
    assert report.before_since == len(sent) - len(later)
    users = sink.rows["user_recent_push"]
    assert {u: row["interaction_count"] for u, row in users.items()} == Counter(
        e.user_id for e in later if isinstance(e, Interaction)
    )
    items = sink.rows["item_stats_push"]
    # Every written item row is in the ledger a running API reads (api.state), once.
    assert sorted(notifier.items) == sorted(items)
    assert {i: row["click_count"] for i, row in items.items() if row["click_count"]} == Counter(
        e.item_id for e in later if isinstance(e, Click)
    )
    for row in users.values():
        assert all(t >= since for t in row["recent_times"])
