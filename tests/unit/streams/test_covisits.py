"""Co-visitation: the pairs of a known sequence, the bounded neighbours, and the worker's
batch path folding the same neighbours as the prequential harness."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from serving.cascade import covisit_row
from streams.batches import by_item_partition, fold_item_batch, fold_user_batch
from streams.events import Interaction
from streams.folding import (
    COVISIT,
    COVISIT_KEEP,
    ItemDelta,
    ItemState,
    UserState,
    covisit_entries,
    covisit_pairs,
    fold_interaction,
    fold_item,
    item_entries,
    item_rows,
    merge_covisits,
)
from training.evaluation.prequential_state import OnlineState

T0 = 1_700_000_000_000


def _view(user: str, item: str, t: int, event_id: str | None = None) -> Interaction:
    extra = {"event_id": event_id} if event_id else {}
    return Interaction(user_id=user, item_id=item, action="view", event_time=T0 + t, **extra)


def _fold_pairs(events: list[Interaction], window: int) -> dict[tuple[str, str], float]:
    """Every pair's total weight, folding ``events`` one by one into one user's state."""
    state = UserState()
    totals: dict[tuple[str, str], float] = {}
    for event in events:
        fold_interaction(state, event, keep=50)
        for other, weight in covisit_pairs(state, event, window):
            key = (min(event.item_id, other), max(event.item_id, other))
            totals[key] = totals.get(key, 0.0) + weight
    return totals


def test_each_interaction_pairs_with_the_items_just_before_it() -> None:
    events = [_view("u", item, t) for t, item in enumerate("abcd")]
    assert _fold_pairs(events, window=2) == {
        ("a", "b"): 1.0,
        ("a", "c"): 1.0,
        ("b", "c"): 1.0,
        ("b", "d"): 1.0,
        ("c", "d"): 1.0,
    }


def test_a_repeat_pairs_with_others_once_and_never_with_itself() -> None:
    events = [_view("u", item, t) for t, item in enumerate("abab")]
    assert _fold_pairs(events, window=3) == {("a", "b"): 3.0}


def test_the_pairs_are_the_same_before_folding_after_and_when_redelivered() -> None:
    state = UserState()
    for t, item in enumerate("abc"):
        fold_interaction(state, _view("u", item, t * 10, f"e{t}"), keep=50)
    late = _view("u", "x", 15, "late")  # between b (10) and c (20)
    before = covisit_pairs(state, late, 5)
    fold_interaction(state, late, keep=50)
    assert before == covisit_pairs(state, late, 5) == [("b", 1.0), ("a", 1.0)]


def test_an_item_keeps_its_heaviest_neighbours_and_every_pair_in_its_total() -> None:
    neighbours: dict[str, float] = {}
    merge_covisits(neighbours, {"a": 3.0, "b": 1.0, "c": 2.0}, keep=2)
    assert neighbours == {"a": 3.0, "c": 2.0}
    merge_covisits(neighbours, {"b": 5.0}, keep=2)  # b starts again and climbs past c
    assert neighbours == {"b": 5.0, "a": 3.0}

    state = ItemState()
    delta = ItemDelta("x")
    for n in range(COVISIT_KEEP + 20):
        delta.add_covisit(f"n{n:03d}", 1.0 + n, T0 + n)
    fold_item(state, delta)
    assert len(state.covisits) == COVISIT_KEEP
    assert state.covisit_items[0] == f"n{COVISIT_KEEP + 19:03d}"  # heaviest first
    assert state.covisit_total == pytest.approx(sum(1.0 + n for n in range(COVISIT_KEEP + 20)))
    assert state.covisit_time == T0 + COVISIT_KEEP + 19
    row = item_rows([("x", state)])
    assert row["covisit_items"][0] == state.covisit_items
    assert row["covisit_weights"][0] == state.covisit_weights
    assert ItemState.from_json(state.to_json()) == state


def test_covisit_entries_reach_both_items_in_one_message_each() -> None:
    event = _view("u", "b", 1)
    entries = covisit_entries("t:0", 7, event, [("a", 1.0)])
    messages = {m.item_id: m for m in item_entries([("t:0", 7, event)], entries)}
    assert messages["b"].entries == [[7, "v", T0 + 1], [7, COVISIT, T0 + 1, "a", 1.0]]
    assert messages["a"].entries == [[7, COVISIT, T0 + 1, "b", 1.0]]


def _record(topic: str, partition: int, offset: int, value: Any = None) -> Any:
    return SimpleNamespace(
        message=SimpleNamespace(topic=topic, partition=partition, offset=offset), value=value
    )


SEQUENCE = [
    ("u1", "a"),
    ("u1", "b"),
    ("u2", "b"),
    ("u1", "c"),
    ("u2", "c"),
    ("u2", "a"),
    ("u3", "c"),
    ("u3", "d"),
    ("u1", "d"),
    ("u3", "a"),
]


def _worker(batches: list[list[tuple[str, str]]]) -> dict[str, ItemState]:
    """The worker's path: user batches, item-side messages, item batches, over JSON."""
    users: dict[str, bytes] = {}
    items: dict[str, bytes] = {}
    offset = 0
    for chunk in batches:
        decoded = []
        for user, item in chunk:
            decoded.append((_record("t", 0, offset), _view(user, item, offset, f"e{offset}")))
            offset += 1
        batch = fold_user_batch(decoded, users.get, keep=50)
        for user, state in batch.folded.changed.items():
            users[user] = state.to_json()
        grouped = by_item_partition(batch.for_items, [], 2, batch.covisits)
        records = [_record("activity", p, n, {"items": m}) for p, m in grouped.items() for n in [0]]
        folded = fold_item_batch(records, items.get)
        for item, state in folded.changed.items():
            items[item] = state.to_json()
    return {item: ItemState.from_json(value) for item, value in items.items()}


@pytest.mark.parametrize("batch_size", [1, 3, len(SEQUENCE)])
def test_the_worker_and_the_prequential_harness_fold_the_same_neighbours(
    batch_size: int,
) -> None:
    worker = _worker([SEQUENCE[i : i + batch_size] for i in range(0, len(SEQUENCE), batch_size)])
    harness = OnlineState(["a", "b", "c", "d"], keep=50, recent_days=14)
    for offset, (user, item) in enumerate(SEQUENCE):
        harness.fold(_view(user, item, offset, f"e{offset}"))
    for item, state in worker.items():
        online = harness.items[item]
        assert state.covisits == online.covisits, item
        assert state.covisit_total == online.covisit_total
        neighbours, weights = covisit_row(
            (state.covisit_items, state.covisit_weights, state.covisit_total),
            harness.item_index,
        )
        index = harness.item_index[item]
        assert harness.neighbours[index].tolist() == neighbours
        assert harness.neighbour_weights[index].tolist() == weights
    # u1: a b c d, u2: b c a, u3: c d a; within the window every earlier item pairs
    assert worker["a"].covisits == {"b": 2.0, "c": 3.0, "d": 2.0}
    assert worker["d"].covisit_total == 5.0


def test_a_redelivered_batch_adds_no_pair_twice() -> None:
    decoded = [(_record("t", 0, n), _view("u", item, n, f"e{n}")) for n, item in enumerate("abc")]
    users: dict[str, bytes] = {}
    first = fold_user_batch(decoded, users.get, keep=50)
    users["u"] = first.folded.changed["u"].to_json()
    again = fold_user_batch(decoded, users.get, keep=50)  # the same records after a crash
    assert again.covisits == first.covisits
    items: dict[str, bytes] = {}
    for batch in (first, again):
        grouped = by_item_partition(batch.for_items, [], 1, batch.covisits)
        records = [_record("activity", 0, 0, {"items": m}) for m in grouped.values()]
        for item, state in fold_item_batch(records, items.get).changed.items():
            items[item] = state.to_json()
    assert ItemState.from_json(items["a"]).covisits == {"b": 1.0, "c": 1.0}
