"""The agents' batch functions, without Faust or a broker."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from streams.batches import (
    by_item_partition,
    fold_item_batch,
    fold_user_batch,
    item_partition,
    once,
    split_clicks,
)
from streams.events import Click, Interaction, RecommendationServed, RecommendedItem
from streams.folding import IMPRESSION, ItemState, UserState, group_entries, item_entries

T0 = 1_700_000_000_000


def _record(topic: str, partition: int, offset: int, value: Any = None) -> Any:
    message = SimpleNamespace(topic=topic, partition=partition, offset=offset)
    return SimpleNamespace(message=message, value=value)


def _view(user: str, item: str, t: int, event_id: str | None = None) -> Interaction:
    extra = {"event_id": event_id} if event_id else {}
    return Interaction(user_id=user, item_id=item, action="view", event_time=T0 + t, **extra)


def test_a_record_handed_over_twice_in_a_batch_is_kept_once() -> None:
    # Offset 7 of interactions[1] comes again after a seek; the same offset of another
    # partition or topic is a different record.
    records = [
        _record("interactions", 1, 6),
        _record("interactions", 1, 7),
        _record("interactions", 2, 7),
        _record("clicks", 1, 7),
        _record("interactions", 1, 7),
        _record("interactions", 1, 8),
    ]
    kept, repeats = once(records)
    assert [(r.message.topic, r.message.partition, r.message.offset) for r in kept] == [
        ("interactions", 1, 6),
        ("interactions", 1, 7),
        ("interactions", 2, 7),
        ("clicks", 1, 7),
        ("interactions", 1, 8),
    ]
    assert repeats == {"interactions": 1}


def test_a_user_batch_folds_new_events_and_recognises_repeats_and_redeliveries() -> None:
    stored: dict[str, bytes] = {}
    first = [
        (_record("t.interactions", 0, 10), _view("u1", "a", 1, "e1")),
        (_record("t.interactions", 0, 11), _view("u2", "b", 2, "e2")),
        (_record("t.interactions", 0, 12), _view("u1", "c", 3, "e1")),  # a repeated send
    ]
    batch = fold_user_batch(first, stored.get, keep=5)
    folded = batch.folded
    assert (batch.new, batch.duplicates, folded.redelivered_count) == (2, 1, 0)
    assert folded.changed["u1"].items == ["a"] and folded.changed["u2"].items == ["b"]
    assert folded.last_record["u1"].message.offset == 12  # its changelog partition's record
    assert [offset for _, offset, _ in batch.for_items] == [10, 11]  # not the repeat
    assert batch.seen == {"u1": {"a", "c"}, "u2": {"b"}}
    stored.update({user: state.to_json() for user, state in folded.changed.items()})

    # After a crash the whole batch comes again, with one new event.
    again = [*first, (_record("t.interactions", 0, 13), _view("u2", "d", 4, "e3"))]
    batch = fold_user_batch(again, stored.get, keep=5)
    folded = batch.folded
    assert (batch.new, batch.duplicates, folded.redelivered_count) == (1, 0, 3)
    assert list(folded.changed) == ["u2"] and folded.changed["u2"].items == ["d", "b"]
    # Redelivered events go to the item side again, which skips what it has; the
    # repeat's entry never went, so it does not go now.
    assert [offset for _, offset, _ in batch.for_items] == [10, 11, 13]
    # u1 met only redelivered records: pushed again as it stands, after the changed.
    assert [user for user, _ in folded.to_push()] == ["u2", "u1"]
    assert UserState.from_json(stored["u1"]).items == ["a"]


def test_clicks_go_to_the_item_side_and_both_kinds_to_the_join() -> None:
    served = RecommendationServed(
        request_id="r",
        user_id="u1",
        variant="v",
        model_version="m",
        items=(RecommendedItem(item_id="a", rank=1, score=1.0, reason=""),),
        event_time=T0,
    )
    click = Click(request_id="r", user_id="u1", item_id="a", rank=1, event_time=T0 + 5)
    decoded = [
        (_record("t.recommendations", 2, 4), served),
        (_record("t.clicks", 2, 9), click),
    ]
    for_items, to_join = split_clicks(decoded)
    assert for_items == [("t.clicks:2", 9, click)]
    assert [event for _, event in to_join] == [served, click]


def test_an_item_batch_folds_each_entry_once() -> None:
    entries = item_entries([("t.interactions:0", 10, _view("u1", "a", 1))])
    joined = group_entries([("join:t.recommendations:0", 4, "a", IMPRESSION, T0)])
    message = {"items": [m.to_dict() for m in [*entries, *joined]]}
    stored: dict[str, bytes] = {}
    folded = fold_item_batch([_record("t.activity", 1, 0, message)], stored.get)
    assert list(folded.changed) == ["a"] and folded.redelivered_count == 0
    state = folded.changed["a"]
    assert (state.interaction_count, state.impression_count) == (1, 1)
    stored["a"] = state.to_json()

    # The same message again (the item side redelivered) changes nothing and is pushed
    # again as it stands.
    folded = fold_item_batch([_record("t.activity", 1, 0, message)], stored.get)
    assert folded.changed == {} and folded.redelivered_count == 2
    assert folded.to_push() == [("a", ItemState.from_json(stored["a"]))]


def test_item_side_messages_go_one_per_destination_partition() -> None:
    views = [("t.interactions:0", n, _view("u", f"i{n}", n)) for n in range(30)]
    grouped = by_item_partition(views, [], partitions=3)
    assert set(grouped) == {0, 1, 2}
    for partition, items in grouped.items():
        assert all(item_partition(item["item_id"], 3) == partition for item in items)
    assert sum(len(items) for items in grouped.values()) == 30
