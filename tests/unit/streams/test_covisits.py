"""Co-visitation: the pairs of a known sequence, every neighbour's count with the top N
chosen on read, and the same rows however the log was batched, partitioned, interleaved
and redelivered, in the worker's batch path and the prequential harness."""

from __future__ import annotations

import random
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


def _fold_pairs(events: list[Interaction], window: int) -> dict[tuple[str, str], int]:
    """Every pair's count, folding ``events`` one by one into one user's state."""
    state = UserState()
    totals: dict[tuple[str, str], int] = {}
    for event in events:
        fold_interaction(state, event, keep=50)
        for other, count in covisit_pairs(state, event, window):
            key = (min(event.item_id, other), max(event.item_id, other))
            totals[key] = totals.get(key, 0) + count
    return totals


def test_each_interaction_pairs_with_the_items_just_before_it() -> None:
    events = [_view("u", item, t) for t, item in enumerate("abcd")]
    assert _fold_pairs(events, window=2) == {
        ("a", "b"): 1,
        ("a", "c"): 1,
        ("b", "c"): 1,
        ("b", "d"): 1,
        ("c", "d"): 1,
    }


def test_a_repeat_pairs_with_others_once_and_never_with_itself() -> None:
    events = [_view("u", item, t) for t, item in enumerate("abab")]
    assert _fold_pairs(events, window=3) == {("a", "b"): 3}


def test_the_pairs_are_the_same_before_folding_after_and_when_redelivered() -> None:
    state = UserState()
    for t, item in enumerate("abc"):
        fold_interaction(state, _view("u", item, t * 10, f"e{t}"), keep=50)
    late = _view("u", "x", 15, "late")  # between b (10) and c (20)
    before = covisit_pairs(state, late, 5)
    fold_interaction(state, late, keep=50)
    assert before == covisit_pairs(state, late, 5) == [("b", 1), ("a", 1)]


def test_a_state_recovered_ahead_pairs_a_redelivered_event_as_the_first_time() -> None:
    # c at offset 2, then a late x at offset 3 that happened before b: a worker killed
    # after saving the state of both meets c again in a state where x sits after it.
    events = [("a", 0), ("b", 10), ("c", 20), ("x", 5)]
    state = UserState()
    first = []
    for offset, (item, t) in enumerate(events):
        event = _view("u", item, t, f"e{offset}")
        fold_interaction(state, event, keep=50, position=offset)
        first.append(covisit_pairs(state, event, position=offset))
    assert first[2] == [("b", 1), ("a", 1)]
    assert first[3] == [("a", 1)]
    again = [
        covisit_pairs(state, _view("u", item, t, f"e{offset}"), position=offset)
        for offset, (item, t) in enumerate(events)
    ]
    assert again == first
    recovered = UserState.from_json(state.to_json())
    assert recovered.positions == [2, 1, 3, 0]  # c b x a


def test_an_item_keeps_every_neighbour_and_rows_take_the_heaviest_ties_by_id() -> None:
    neighbours: dict[str, int] = {}
    merge_covisits(neighbours, {"a": 3, "b": 1, "c": 2})
    merge_covisits(neighbours, {"b": 5})
    assert neighbours == {"a": 3, "b": 6, "c": 2}  # nothing is ever evicted

    state = ItemState()
    delta = ItemDelta("x")
    for n in range(COVISIT_KEEP + 20):
        delta.add_covisit(f"n{n:03d}", (n + 1) // 2, T0 + n)  # n(2k-1), n(2k) tie
    fold_item(state, delta)
    assert len(state.covisits) == COVISIT_KEEP + 20
    assert all(isinstance(count, int) for count in state.covisits.values())
    assert len(state.covisit_items) == COVISIT_KEEP
    # n117 and n118 count the same: the smaller id first; n019 and n020 tie at the cut
    assert state.covisit_items[:3] == ["n119", "n117", "n118"]
    assert state.covisit_items[-3:] == ["n021", "n022", "n019"]
    assert "n020" not in state.covisit_items
    assert state.covisit_weights == sorted(state.covisit_weights, reverse=True)
    assert state.covisit_total == sum((n + 1) // 2 for n in range(COVISIT_KEEP + 20))
    assert state.covisit_time == T0 + COVISIT_KEEP + 19
    row = item_rows([("x", state)])
    assert row["covisit_items"][0] == state.covisit_items
    assert row["covisit_weights"][0] == state.covisit_weights
    assert ItemState.from_json(state.to_json()) == state


def test_covisit_entries_reach_both_items_in_one_message_each() -> None:
    event = _view("u", "b", 1)
    entries = covisit_entries("t:0", 7, event, [("a", 1)])
    messages = {m.item_id: m for m in item_entries([("t:0", 7, event)], entries)}
    assert messages["b"].entries == [[7, "v", T0 + 1], [7, COVISIT, T0 + 1, "a", 1]]
    assert messages["a"].entries == [[7, COVISIT, T0 + 1, "b", 1]]


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
        for item, item_state in folded.changed.items():
            items[item] = item_state.to_json()
    return {item: ItemState.from_json(value) for item, value in items.items()}


@pytest.mark.parametrize("batch_size", [1, 3, len(SEQUENCE)])
def test_the_worker_and_the_prequential_harness_fold_the_same_neighbours(
    batch_size: int,
) -> None:
    worker = _worker([SEQUENCE[i : i + batch_size] for i in range(0, len(SEQUENCE), batch_size)])
    harness = OnlineState(["a", "b", "c", "d"], keep=50, recent_days=14)
    for offset, (user, item) in enumerate(SEQUENCE):
        harness.fold(_view(user, item, offset, f"e{offset}"))
    harness.item_features()  # chooses the changed rows as serving reads them
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
    assert worker["a"].covisits == {"b": 2, "c": 3, "d": 2}
    assert worker["d"].covisit_total == 5


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
    assert ItemState.from_json(items["a"]).covisits == {"b": 1, "c": 1}


def _log(seed: int, partitions: int) -> list[list[Interaction]]:
    """A log per partition (users keyed to one partition each): 60 users over 150 items,
    one in ten events up to an hour late, so a recovered state can hold a later event
    that sits before an earlier one."""
    rng = random.Random(seed)
    log: list[list[Interaction]] = [[] for _ in range(partitions)]
    for n in range(3000):
        user = rng.randrange(60)
        # popular items give some items more than COVISIT_KEEP neighbours
        item = min(rng.randrange(150), rng.randrange(150))
        when = 60_000 * n - (rng.random() < 0.1) * rng.randrange(3_600_000)
        log[user % partitions].append(_view(f"u{user}", f"i{item}", when, f"e{n}"))
    return log


def _fold_worker(
    log: list[list[Interaction]], rng: random.Random, item_partitions: int, crash: float
) -> dict[str, ItemState]:
    """The worker's batch path over ``log``: partitions taken in a random interleaving, in
    batches of random sizes; with probability ``crash`` a batch's user states are saved
    and its item-side messages lost (killed before sending them and committing), then the
    same records are redelivered to the saved states. Item-side messages of a batch reach
    their partitions in a random order."""
    users: dict[str, bytes] = {}
    items: dict[str, bytes] = {}
    done = [0] * len(log)
    while any(n < len(events) for n, events in zip(done, log, strict=True)):
        partition = rng.choice([p for p, events in enumerate(log) if done[p] < len(events)])
        size = rng.choice([1, 7, 50, 400])
        start, done[partition] = done[partition], min(done[partition] + size, len(log[partition]))
        decoded = [
            (_record("t", partition, offset), log[partition][offset])
            for offset in range(start, done[partition])
        ]
        while True:
            batch = fold_user_batch(decoded, users.get, keep=50)
            for user, state in [*batch.folded.changed.items(), *batch.folded.redelivered.items()]:
                users[user] = state.to_json()
            if rng.random() >= crash:
                break
        grouped = list(
            by_item_partition(batch.for_items, [], item_partitions, batch.covisits).items()
        )
        rng.shuffle(grouped)
        for destination, messages in grouped:
            records = [_record("activity", destination, 0, {"items": messages})]
            for item, item_state in fold_item_batch(records, items.get).changed.items():
                items[item] = item_state.to_json()
    return {item: ItemState.from_json(value) for item, value in items.items()}


def _covisit_rows(items: dict[str, ItemState]) -> dict[str, tuple[Any, ...]]:
    return {
        item: (state.covisits, state.covisit_total, state.covisit_items, state.covisit_weights)
        for item, state in items.items()
        if state.covisits
    }


def test_every_batching_interleaving_and_redelivery_folds_the_same_rows() -> None:
    log = _log(seed=5, partitions=2)
    clean = _covisit_rows(_fold_worker(log, random.Random(0), item_partitions=1, crash=0.0))
    assert max(len(row[0]) for row in clean.values()) > COVISIT_KEEP  # the cut matters
    for seed in (1, 2):
        folded = _fold_worker(log, random.Random(seed), item_partitions=3, crash=0.3)
        assert _covisit_rows(folded) == clean
    # the harness folds the same log one event at a time, partition after partition
    harness = OnlineState([f"i{n}" for n in range(150)], keep=50, recent_days=14)
    for events in reversed(log):
        for event in events:
            harness.fold(event)
    assert _covisit_rows(harness.items) == clean
    harness.item_features()  # chooses the changed rows as serving reads them
    for item, (_, total, neighbours, weights) in clean.items():
        index = harness.item_index[item]
        row = covisit_row((neighbours, weights, total), harness.item_index)
        got = harness.neighbours[index].tolist(), harness.neighbour_weights[index].tolist()
        assert got == row
        assert harness.covisit_totals[index] == total
