"""The impression-click join and the short event-time window, as plain functions."""

from __future__ import annotations

import random
import tracemalloc

from streams.events import Click, RecommendationServed, RecommendedItem
from streams.folding import (
    ATTRIBUTED_CLICK,
    IMPRESSION,
    WINDOW_MS,
    WINDOW_STEP_MS,
    ItemDelta,
    ItemEntries,
    ItemState,
    fold_item,
    fold_item_entries,
    group_entries,
    item_rows,
    stamp,
)
from streams.joins import (
    ATTRIBUTION_WINDOW_MS,
    CLOCK_SKEW_MS,
    GRACE_MS,
    Joined,
    RequestJoin,
    RequestState,
    expiry,
    given_up_count,
    join_click,
    join_served,
)

T0 = 1_700_000_000_000
RECS, CLICKS = "t.recommendations:0", "t.clicks:0"


def _served(request_id: str, items: list[str], at: int = T0) -> RecommendationServed:
    return RecommendationServed(
        user_id="u",
        request_id=request_id,
        variant="a",
        model_version="m",
        event_time=at,
        items=tuple(
            RecommendedItem(item_id=item, rank=rank, score=1.0, reason="r")
            for rank, item in enumerate(items, start=1)
        ),
    )


def _click(request_id: str, item_id: str, at: int = T0 + 1000) -> Click:
    return Click(user_id="u", request_id=request_id, item_id=item_id, rank=1, event_time=at)


def _fold_all(entries: list[tuple[str, int, str, str, int]]) -> dict[str, ItemState]:
    items: dict[str, ItemState] = {}
    for message in group_entries(entries):
        fold_item_entries(items.setdefault(message.item_id, ItemState()), message)
    return items


def test_a_click_on_a_served_item_is_attributed_once_and_others_are_not() -> None:
    state = RequestState(partition=0)
    outcome, entries = join_served(state, _served("r", ["a", "b", "c"]), RECS, 0)
    assert outcome is Joined.IMPRESSIONS
    assert [(e[2], e[3]) for e in entries] == [
        ("a", IMPRESSION),
        ("b", IMPRESSION),
        ("c", IMPRESSION),
    ]
    assert join_click(state, _click("r", "b"), CLICKS, 0)[0] is Joined.ATTRIBUTED
    assert join_click(state, _click("r", "b"), CLICKS, 1)[0] is Joined.UNATTRIBUTED  # repeated
    assert join_click(state, _click("r", "z"), CLICKS, 2)[0] is Joined.UNATTRIBUTED  # not served
    late = _click("r", "a", at=T0 + ATTRIBUTION_WINDOW_MS + 1)
    assert join_click(state, late, CLICKS, 3) == (Joined.UNATTRIBUTED, [])
    early = _click("r", "c", at=T0 - CLOCK_SKEW_MS)  # a client clock behind: still counts
    assert join_click(state, early, CLICKS, 4)[0] is Joined.ATTRIBUTED
    assert RequestState.from_dict(state.to_dict()) == state


def test_a_click_read_before_its_impression_waits_and_joins_the_same() -> None:
    served, hit, miss = _served("r", ["a", "b"]), _click("r", "a"), _click("r", "x")
    in_order = RequestState(partition=0)
    entries = join_served(in_order, served, RECS, 5)[1]
    entries += join_click(in_order, hit, CLICKS, 7)[1] + join_click(in_order, miss, CLICKS, 8)[1]

    click_first = RequestState(partition=0)
    assert join_click(click_first, hit, CLICKS, 7) == (Joined.PENDING, [])
    assert join_click(click_first, miss, CLICKS, 8) == (Joined.PENDING, [])
    outcome, late_entries = join_served(click_first, served, RECS, 5)
    assert outcome is Joined.IMPRESSIONS and click_first.pending == []
    # The joined click is sent at the impression's offset, under the join's own source.
    assert ("join:" + RECS, 5, "a", ATTRIBUTED_CLICK, hit.event_time) in late_entries

    for state in (_fold_all(entries), _fold_all(late_entries)):
        assert {i: (s.impression_count, s.attributed_click_count) for i, s in state.items()} == {
            "a": (1, 1),
            "b": (1, 0),
        }


def test_redelivered_events_resend_their_entries_and_the_item_side_counts_them_once() -> None:
    events: list[tuple[str, int, RecommendationServed | Click]] = [
        (CLICKS, 0, _click("r1", "a")),  # before its impression
        (RECS, 0, _served("r1", ["a", "b"])),
        (RECS, 1, _served("r2", ["a", "c"], at=T0 + 10)),
        (CLICKS, 1, _click("r2", "c", at=T0 + 20)),
        (CLICKS, 2, _click("r2", "zz", at=T0 + 30)),
    ]
    once = RequestJoin()
    sent = [e for source, offset, ev in events for e in once.fold(ev, source, 0, offset)]
    want = _fold_all(sent)

    # A crash after the join state was written but before any entry reached the item
    # side: everything is redelivered; then a message arrives twice.
    crashed = RequestJoin()
    for source, offset, event in events:
        crashed.fold(event, source, 0, offset)
    resent = [e for source, offset, ev in events for e in crashed.fold(ev, source, 0, offset)]
    assert crashed.outcomes[Joined.REDELIVERED] == len(events)
    assert resent == sent  # the same entries in the same order, impressions given again
    items: dict[str, ItemState] = {}
    for message in group_entries(resent) + group_entries(resent[:3]):
        fold_item_entries(items.setdefault(message.item_id, ItemState()), message)
    assert {i: s.to_dict() for i, s in items.items()} == {i: s.to_dict() for i, s in want.items()}
    assert {i: (s.impression_count, s.attributed_click_count) for i, s in want.items()} == {
        "a": (2, 1),
        "b": (1, 0),
        "c": (1, 1),
    }


def test_a_stored_request_keeps_no_impression_and_one_stored_with_them_resends_the_same() -> None:
    state = RequestState(partition=0)
    join_click(state, _click("r", "b"), CLICKS, 3)
    sent = join_served(state, _served("r", ["a", "b", "c"]), RECS, 9)[1]
    assert [(e[2], e[3]) for e in sent] == [
        ("a", IMPRESSION),
        ("b", IMPRESSION),
        ("c", IMPRESSION),
        ("b", ATTRIBUTED_CLICK),
    ]
    stored = state.to_json()
    assert RequestState.from_json(stored) == state
    assert [entry[3] for entry in state.emitted] == [ATTRIBUTED_CLICK]
    assert join_served(RequestState.from_json(stored), _served("r", ["a"]), RECS, 9)[1] == sent
    # A state stored before ``served_at`` kept its impressions in ``emitted``.
    old = {**state.to_dict(), "emitted": [list(e) for e in sent]}
    del old["served_at"]
    assert join_served(RequestState.from_dict(old), _served("r", ["a"]), RECS, 9)[1] == sent
    assert join_served(RequestState.from_dict(old), _served("r", ["a"]), RECS, 8)[1] == []


def test_a_stored_state_holds_no_more_memory_than_its_bytes_need() -> None:
    states = []
    for n in range(500):
        state = RequestState(partition=n % 3)
        join_served(state, _served(f"r{n}", [f"i{n + k}" for k in range(10)]), RECS, n)
        states.append(state)
    tracemalloc.start()
    try:
        kept = [state.to_json() for state in states]
        traced = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # The bytes and the list that holds them (orjson's own result took 4 KiB each).
    assert traced < sum(len(value) + 64 for value in kept) + 8 * len(kept) + 4096


def test_the_expiry_index_finds_what_the_clocks_passed_as_a_walk_would() -> None:
    rng = random.Random(11)
    join = RequestJoin()
    offsets = {RECS: 0, CLICKS: 0}
    for n in range(600):
        at = T0 + n * 20_000 + rng.randrange(-GRACE_MS // 2, GRACE_MS // 2)
        request = f"r{rng.randrange(400)}"
        if rng.random() < 0.5:
            event: RecommendationServed | Click = _served(request, [f"i{n % 5}"], at=at)
            source = RECS
        else:
            event, source = _click(request, f"i{n % 5}", at=at), CLICKS
        partition = int(request[1:]) % 3
        join.fold(event, source.replace(":0", f":{partition}"), partition, offsets[source])
        offsets[source] += 1
        if n % 7 == 0:
            # What a walk over every state would forget now, by reason.
            want = {r: why for r, s in join.requests.items() if (why := expiry(s, join.clocks))}
            before = dict(join.requests)
            given_up = dict(join.given_up)
            join.expire()
            assert set(before) - set(join.requests) == set(want)
            for why in ("pending_click", "request"):
                gone = [before[r] for r, w in want.items() if w == why]
                added = join.given_up.get(why, 0) - given_up.get(why, 0)
                assert added == sum(given_up_count(s, why) for s in gone)
            assert len(join.index) == len(join.requests)
    assert join.given_up["request"] > 0 and join.given_up["pending_click"] > 0


def test_one_message_may_carry_several_entries_at_one_offset() -> None:
    state = ItemState()
    message = ItemEntries("a", "join:t:0", [[4, IMPRESSION, T0], [4, ATTRIBUTED_CLICK, T0 + 5]])
    assert fold_item_entries(state, message) == 2
    assert fold_item_entries(state, message) == 0
    assert (state.impression_count, state.attributed_click_count, state.offsets) == (
        1,
        1,
        {"join:t:0": 4},
    )
    # Impressions are not interactions: recency stays, but the row time covers them.
    assert state.last_event_time == 0 and stamp(state) == T0 + 5


def test_any_arrival_order_within_the_grace_gives_the_same_counts() -> None:
    rng = random.Random(3)
    served = [
        _served(f"r{n}", [f"i{(n + k) % 7}" for k in range(3)], at=T0 + 60_000 * n)
        for n in range(40)
    ]
    clicks = [
        _click(s.request_id, rng.choice([*[i.item_id for i in s.items], "x"]), s.event_time + 5)
        for s in served
        for _ in range(2)
    ]
    by_time = RequestJoin()
    merged = sorted(
        [(s.event_time, 0, s) for s in served] + [(c.event_time, 1, c) for c in clicks],
        key=lambda t: (t[0], t[1]),
    )
    sent = [e for n, (_, _, ev) in enumerate(merged) for e in by_time.fold(ev, "x", 0, n)]
    want = _fold_all(sent)
    for seed in range(5):
        # The two topics read in arbitrary interleavings, each in its own order.
        shuffled, order = RequestJoin(), random.Random(seed)
        recs, rest = list(enumerate(served)), list(enumerate(clicks))
        out = []
        while recs or rest:
            take_rec = recs and (not rest or order.random() < 0.3)
            source, (offset, event) = (RECS, recs.pop(0)) if take_rec else (CLICKS, rest.pop(0))
            out += shuffled.fold(event, source, 0, offset)
            shuffled.expire()
        got = _fold_all(out)
        assert {i: (s.impression_count, s.attributed_click_count) for i, s in got.items()} == {
            i: (s.impression_count, s.attributed_click_count) for i, s in want.items()
        }


def test_state_is_forgotten_once_the_clocks_pass_the_bound_and_counted() -> None:
    join = RequestJoin()
    join.fold(_click("never", "a", at=T0), CLICKS, 0, 0)  # its request never comes
    join.fold(_served("r", ["a"], at=T0), RECS, 0, 0)
    join.expire()
    assert set(join.requests) == {"never", "r"}
    # The recommendations clock passes the pending click's bound: it is given up.
    join.fold(_served("r2", ["b"], at=T0 + CLOCK_SKEW_MS + GRACE_MS + 1), RECS, 0, 1)
    join.expire()
    assert "never" not in join.requests and join.given_up == {"pending_click": 1}
    # The clicks clock passes the request's attribution window and grace: forgotten.
    join.fold(_click("r2", "b", at=T0 + ATTRIBUTION_WINDOW_MS + GRACE_MS + 1), CLICKS, 0, 1)
    join.expire()
    assert "r" not in join.requests and join.given_up["request"] == 1
    # A click on a forgotten request finds nothing: it waits, and is never attributed.
    late = join.fold(_click("r", "a", at=T0 + 10), CLICKS, 0, 2)
    assert late == [] and join.requests["r"].pending == [["a", T0 + 10]]


def test_the_hour_window_counts_by_event_time_whatever_the_order() -> None:
    rng = random.Random(7)
    times = [T0 + rng.randrange(3 * WINDOW_MS) for _ in range(300)]
    newest = max(times)
    end = newest - newest % WINDOW_STEP_MS + WINDOW_STEP_MS
    want = sum(1 for t in times if end - WINDOW_MS <= t < end)
    results = []
    for seed in range(4):
        random.Random(seed).shuffle(times)
        state = ItemState()
        for start in range(0, len(times), 37):  # batches of deltas
            delta = ItemDelta("i")
            for t in times[start : start + 37]:
                delta.add_kind("v", t)
            fold_item(state, delta)
        assert ItemState.from_dict(state.to_dict()) == state
        results.append((state.interactions_1h, state.interactions_1h_end))
        assert len(state.window) <= WINDOW_MS // WINDOW_STEP_MS
    assert results == [(want, end)] * 4


def test_item_rows_carry_the_join_and_window_features() -> None:
    state = ItemState(impression_count=3, attributed_click_count=1, window={T0: 4})
    rows = item_rows([("i", state)])
    assert rows["attributed_ctr"] == [(1 + 1) / (3 + 20)]
    assert rows["interactions_1h"] == [4] and rows["interactions_1h_end"] == [T0 + WINDOW_STEP_MS]
    assert item_rows([("j", ItemState())])["attributed_ctr"] == [0.05]
