"""The agents' batch functions, without Faust or a broker."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from streams.batches import (
    DecodedStates,
    by_item_partition,
    fold_item_batch,
    fold_user_batch,
    item_partition,
    once,
    split_clicks,
)
from streams.changelog import save
from streams.events import Click, Interaction, RecommendationServed, RecommendedItem
from streams.folding import (
    IMPRESSION,
    ItemState,
    UserState,
    group_entries,
    heaviest_covisits,
    item_entries,
    item_rows,
    stored_json,
)

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


def test_a_state_kept_decoded_is_used_only_while_the_table_holds_its_very_bytes() -> None:
    decoded = DecodedStates(ItemState, capacity=2)
    state = ItemState(impression_count=1)
    value = state.to_json()
    decoded.keep("a", value, state)
    assert decoded.take("a", value) is state
    # Taken means gone: a batch that fails after taking it leaves nothing to reuse.
    again = decoded.take("a", value)
    assert again is not state and again == state
    # Equal bytes in another object (recovered from the changelog, written by another
    # worker) are decoded.
    decoded.keep("a", value, state)
    copy = bytes(bytearray(value))
    assert decoded.take("a", copy) is not state
    assert decoded.take("nobody", None) == ItemState()
    # At most ``capacity``, the least recently written dropped first.
    kept = {key: ItemState(impression_count=n) for n, key in enumerate("abc")}
    values = {key: s.to_json() for key, s in kept.items()}
    for key in "abc":
        decoded.keep(key, values[key], kept[key])
    decoded.keep("b", values["b"], kept["b"])  # written again: now the newest
    decoded.keep("d", values["a"], kept["a"])
    assert len(decoded) == 2
    assert decoded.take("c", values["c"]) is not kept["c"]
    assert decoded.take("b", values["b"]) is kept["b"]


def test_item_batches_store_the_same_bytes_and_rows_with_states_kept_decoded(
    monkeypatch: Any,
) -> None:
    """Views (with their co-visitation pairs) and impressions over forty batches, folded
    with the states kept decoded and decoded every batch: the same stored bytes and rows
    after every batch, so the kept neighbours and their JSON follow every new pair."""
    decodes = {"plain": 0, "kept": 0}
    current = ["plain"]  # the way folding now
    decode = ItemState.from_json.__func__  # type: ignore[attr-defined]

    def counted(cls: type[ItemState], value: bytes | None) -> ItemState:
        decodes[current[0]] += 1
        return decode(cls, value)  # type: ignore[no-any-return]

    monkeypatch.setattr(ItemState, "from_json", classmethod(counted))
    users: dict[str, bytes] = {}
    plain: dict[str, bytes] = {}
    kept: dict[str, bytes] = {}
    decoded = DecodedStates(ItemState, capacity=100)
    tables = {
        id(stored): SimpleNamespace(data=stored, key_serializer="json", value_serializer="raw")
        for stored in (plain, kept)
    }
    offset = 0
    for batch in range(40):
        views = []
        for n in range(15):
            offset += 1
            item = f"i{(batch * 7 + n * n) % 23}"
            event = _view(f"u{n % 4}", item, offset, f"e{offset}")
            views.append((_record("t.interactions", 0, offset), event))
        users_batch = fold_user_batch(views, users.get, keep=20)
        for user, state in users_batch.folded.changed.items():
            users[user] = state.to_json()
        shown = [
            ("join:t.recommendations:0", batch * 10 + k, f"i{k}", IMPRESSION, T0 + batch)
            for k in range(10)
        ]
        grouped = by_item_partition(
            users_batch.for_items, group_entries(shown), 1, users_batch.covisits
        )
        records = [_record("t.activity", 0, batch, {"items": grouped[0]})]
        rows = []
        for way, stored, states in (("plain", plain, None), ("kept", kept, decoded)):
            current[0] = way
            folded = fold_item_batch(records, stored.get, states)
            last = {key: records[0] for key in folded.changed}
            save(tables[id(stored)], folded.changed, last, states)  # type: ignore[arg-type]
            rows.append(item_rows(sorted(folded.to_push())))
        assert kept == plain, f"batch {batch}"
        assert rows[0] == rows[1], f"batch {batch}"
    # Each state with its every pair, and the row's neighbours the heaviest.
    for value in kept.values():
        state = decode(ItemState, value)
        assert value == stored_json(state.to_dict())
        assert list(zip(*state.covisit_row(), strict=True)) == heaviest_covisits(state.covisits)
    assert max(len(decode(ItemState, v).covisits) for v in kept.values()) > 10
    # The kept way decoded each item once, when it first came; the plain way every time.
    assert decodes["kept"] == len(kept)
    assert decodes["plain"] > 40 * 10
