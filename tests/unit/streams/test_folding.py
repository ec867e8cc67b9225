from __future__ import annotations

import json
import math

from aiokafka.partitioner import DefaultPartitioner
from faust.serializers import codecs

from streams.batches import item_partition
from streams.events import Click, Interaction
from streams.folding import (
    TREND_HALF_LIFE_MS,
    WINDOW_STEP_MS,
    Fold,
    ItemDelta,
    ItemEntries,
    ItemState,
    UserState,
    decayed,
    entries_of,
    fold_interaction,
    fold_interaction_at,
    fold_item,
    fold_item_entries,
    item_deltas,
    item_entries,
    item_rows,
    source_key,
    stamp,
    user_rows,
)


def _view(item: str, t: int, event_id: str | None = None) -> Interaction:
    extra = {"event_id": event_id} if event_id else {}
    return Interaction(
        user_id="u", item_id=item, action="view", event_time=1_700_000_000_000 + t, **extra
    )


def test_recent_items_are_newest_first_and_capped() -> None:
    state = UserState()
    for t in range(60):
        fold_interaction(state, _view(f"i{t}", t), keep=50)
    assert len(state.items) == 50
    assert state.items[0] == "i59" and state.items[-1] == "i10"
    assert state.times == sorted(state.times, reverse=True)
    assert state.interaction_count == 60


def test_late_event_lands_by_event_time_not_arrival() -> None:
    state = UserState()
    fold_interaction(state, _view("a", 10), keep=5)
    fold_interaction(state, _view("c", 30), keep=5)
    fold_interaction(state, _view("b", 20), keep=5)  # arrives last, happened in between
    assert state.items == ["c", "b", "a"]
    assert state.last_event_time == 1_700_000_000_030


def test_event_older_than_everything_kept_is_counted_but_not_kept() -> None:
    state = UserState()
    for t in range(3):
        fold_interaction(state, _view(f"i{t}", 100 + t), keep=3)
    fold_interaction(state, _view("ancient", 1), keep=3)
    assert "ancient" not in state.items
    assert state.interaction_count == 4


def test_redelivered_event_is_not_folded_twice() -> None:
    state = UserState()
    event = _view("a", 1, event_id="e1")
    assert fold_interaction(state, event, keep=5)
    assert not fold_interaction(state, event, keep=5)
    assert state.items == ["a"] and state.interaction_count == 1


def test_user_state_survives_the_table_round_trip() -> None:
    state = UserState()
    fold_interaction(state, _view("a", 1), keep=5)
    assert UserState.from_dict(state.to_dict()) == state
    assert UserState.from_dict(None) == UserState()


def test_states_survive_the_bytes_their_table_and_changelog_hold() -> None:
    source = source_key("t.interactions", 2)
    user = UserState()
    repeat = _view("b", 2, event_id="e-b")
    for offset, event in enumerate([_view("a", 1), repeat, repeat]):
        fold_interaction_at(user, event, 5, source, offset)
    stamp(user)
    assert user.duplicates and user.offsets  # every field is set
    item = ItemState()
    fold_item(item, ItemDelta("i", interactions=2, last_event_time=WINDOW_STEP_MS * 3))
    fold_item(item, ItemDelta("i", window={0: 1, WINDOW_STEP_MS: 2}, trend=0.5))
    stamp(item)
    for state in (user, item):
        kind = type(state)
        assert kind.from_json(state.to_json()) == state
        # what Faust's json codec wrote when the tables held decoded JSON reads the same
        assert kind.from_json(codecs.dumps("json", state.to_dict())) == state
        assert kind.from_json(None) == kind()
    # a state read twice shares nothing: folding one copy leaves the other as it was
    value = user.to_json()
    first, second = UserState.from_json(value), UserState.from_json(value)
    fold_interaction_at(first, _view("c", 3), 5, source, 9)
    assert second == UserState.from_json(value) != first


def test_item_deltas_count_by_kind_and_fold_into_state() -> None:
    base = {"user_id": "u", "item_id": "i"}
    events: list[Interaction | Click] = [
        Interaction(action=action, event_time=1_700_000_000_000, **base)
        for action in ("view", "purchase", "purchase")
    ]
    events.append(Click(request_id="r", rank=1, event_time=1_700_000_000_500, **base))
    events.append(
        Interaction(user_id="u", item_id="j", action="view", event_time=1_700_000_000_000)
    )
    deltas = item_deltas(events)
    assert sorted(deltas) == ["i", "j"]
    delta = ItemDelta.from_dict(deltas["i"].to_dict())
    assert delta == deltas["i"]
    state = ItemState()
    fold_item(state, delta)
    fold_item(state, delta)
    assert (state.interaction_count, state.purchase_count, state.click_count) == (6, 4, 2)
    assert state.last_event_time == 1_700_000_000_500


def test_rows_have_one_entry_per_entity_in_push_source_columns() -> None:
    user = UserState()
    fold_interaction(user, _view("a", 1), keep=5)
    stamp(user)
    rows = user_rows([("u1", user), ("u2", UserState())])
    assert rows["user_id"] == ["u1", "u2"] and rows["recent_items"][0] == ["a"]
    assert rows["event_timestamp"][0] == user.last_event_time
    item = ItemState(interaction_count=2, last_event_time=9)
    stamp(item)
    items = item_rows([("i1", item)])
    assert items["interaction_count"] == [2] and items["event_timestamp"] == [9]


def test_row_timestamps_always_move_forward() -> None:
    """Feast drops an online row whose timestamp is not later than the stored one."""
    item = ItemState()
    stamps = []
    for delta_time in (100, 50, 100, 200, 200):  # interleaved partitions, ties
        fold_item(item, ItemDelta("i", interactions=1, last_event_time=delta_time))
        stamps.append(stamp(item))
    assert stamps == [100, 101, 102, 200, 201]
    assert ItemState.from_dict(item.to_dict()) == item
    user = UserState()
    fold_interaction(user, _view("a", 5), keep=5)
    first = stamp(user)
    fold_interaction(user, _view("b", 5), keep=5)  # same millisecond, next batch
    assert stamp(user) == first + 1
    assert UserState.from_dict(user.to_dict()) == user


def test_trend_score_halves_per_half_life_and_ignores_arrival_order() -> None:
    day = 24 * 3600 * 1000
    start = 1_700_000_000_000
    times = [start + t for t in (0, TREND_HALF_LIFE_MS, 3 * day, 5 * day, 2 * day)]
    events: list[Interaction | Click] = [
        Interaction(user_id="u", item_id="i", action="view", event_time=t) for t in times
    ]
    events.append(
        Click(request_id="r", user_id="u", item_id="i", rank=1, event_time=start + 4 * day)
    )
    newest = max(times)
    expected = sum(2.0 ** (-(newest - t) / TREND_HALF_LIFE_MS) for t in times)

    one_by_one = ItemState()
    for event in reversed(events):
        fold_item(one_by_one, item_deltas([event])["i"])
    batched = ItemState()
    fold_item(batched, item_deltas(events[3:])["i"])  # a later batch arrives first
    fold_item(batched, item_deltas(events[:3])["i"])
    for state in (one_by_one, batched):
        assert state.last_event_time == newest
        assert math.isclose(state.trend_score, expected, rel_tol=1e-12)
        assert ItemState.from_dict(state.to_dict()) == state
    # A reader a half-life later sees half of it; clicks on recommendations do not count.
    later = decayed(batched.trend_score, newest, newest + TREND_HALF_LIFE_MS)
    assert math.isclose(later, expected / 2)


def test_positioned_folds_skip_everything_at_or_below_the_folded_offset() -> None:
    state = UserState()
    source = source_key("t.interactions", 2)
    assert fold_interaction_at(state, _view("a", 1), 5, source, 10) is Fold.NEW
    assert fold_interaction_at(state, _view("b", 2), 5, source, 11) is Fold.NEW
    # redelivered after a crash: same offsets, whatever the event ids
    assert fold_interaction_at(state, _view("a", 1), 5, source, 10) is Fold.REDELIVERED
    assert fold_interaction_at(state, _view("b", 2), 5, source, 11) is Fold.REDELIVERED
    # a repeated send of a kept event at a new offset
    repeat = _view("c", 3, event_id="e-c")
    assert fold_interaction_at(state, repeat, 5, source, 12) is Fold.NEW
    assert fold_interaction_at(state, repeat, 5, source, 13) is Fold.DUPLICATE
    # after a restart (the state read back from its changelog) the original is redelivered
    # and so is the repeat, which must stay a repeat: its entry never went to the item side
    state = UserState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert fold_interaction_at(state, repeat, 5, source, 12) is Fold.REDELIVERED
    assert fold_interaction_at(state, repeat, 5, source, 13) is Fold.REDELIVERED_DUPLICATE
    # another partition has its own offsets
    other = source_key("t.interactions", 0)
    assert fold_interaction_at(state, _view("d", 4), 5, other, 10) is Fold.NEW
    assert state.interaction_count == 4
    assert UserState.from_dict(state.to_dict()) == state


def test_item_entries_fold_once_however_the_batches_were_cut() -> None:
    base = 1_700_000_000_000
    events: list[tuple[str, int, Interaction | Click]] = []
    for offset in range(12):
        event: Interaction | Click = Interaction(
            user_id="u",
            item_id="i",
            action="purchase" if offset % 4 == 0 else "view",
            event_time=base + 1000 * offset,
        )
        if offset % 5 == 0:
            event = Click(user_id="u", item_id="i", request_id="r", rank=1, event_time=base)
        source = "t.clicks:0" if isinstance(event, Click) else "t.interactions:1"
        events.append((source, offset, event))

    once = ItemState()
    for message in item_entries(events):
        fold_item_entries(once, ItemEntries.from_dict(message.to_dict()))

    # A crash: the first batch (offsets 0-6) was applied, then everything is redelivered
    # in batches cut elsewhere, and one message arrives twice.
    crashed = ItemState()
    for message in item_entries(events[:7]):
        fold_item_entries(crashed, message)
    for cut in (events[:4], events[4:9], events[4:9], events[9:]):
        for message in item_entries(cut):
            fold_item_entries(crashed, message)

    for state in (once, crashed):
        assert state.click_count == 3  # offsets 0, 5, 10
        assert state.interaction_count == 9
        assert state.purchase_count == 2  # offsets 4 and 8 (0 is a click)
        assert state.offsets == {"t.clicks:0": 10, "t.interactions:1": 11}
    assert math.isclose(once.trend_score, crashed.trend_score, rel_tol=1e-12)
    assert ItemState.from_dict(crashed.to_dict()) == crashed


def test_item_activity_messages_of_either_format_give_the_same_entries() -> None:
    base = 1_700_000_000_000
    events: list[tuple[str, int, Interaction | Click]] = [
        ("t.interactions:0", offset, _view(f"i{offset % 3}", offset)) for offset in range(9)
    ]
    messages = item_entries(events)
    assert len(messages) == 3
    grouped = entries_of({"items": [message.to_dict() for message in messages]})
    one_by_one = [entry for m in messages for entry in entries_of(m.to_dict())]
    assert grouped == one_by_one == messages
    assert [e[0] for e in grouped[0].entries] == [0, 3, 6]
    assert grouped[0].entries[1][2] == base + 3


def test_an_item_goes_to_the_partition_kafka_gives_its_id_as_key() -> None:
    partitions = list(range(3))
    for n in range(200):
        item_id = f"item{n}"
        assert item_partition(item_id, 3) == DefaultPartitioner()(
            item_id.encode(), partitions, partitions
        )
    assert {item_partition(f"item{n}", 3) for n in range(200)} == {0, 1, 2}
