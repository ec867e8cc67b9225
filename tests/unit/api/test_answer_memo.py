"""AnswerMemo: an answer is kept while its inputs are the very same objects, or for
``max_age`` seconds after they were replaced; never for another user row."""

from __future__ import annotations

import gc
import weakref

from api.ports import RecentItems
from api.serving.memo import AnswerMemo


class Inputs:
    """Stands for a served set or its item features: compared by identity only."""


def recent(*items: str) -> RecentItems:
    return RecentItems(items=items, times=tuple(range(len(items))), seen=frozenset(items))


LANE = "set-1"


def test_an_equal_request_on_the_same_inputs_is_a_hit() -> None:
    memo: AnswerMemo[str] = AnswerMemo(10)
    inputs = (Inputs(), {"a": "Alien"})
    memo.put(LANE, inputs, ("u1", recent("a", "b"), 10), "list")
    # A row read again is a new object, equal in value: the same answer.
    assert memo.get(LANE, inputs, ("u1", recent("a", "b"), 10)) == "list"


def test_a_changed_row_k_or_user_misses() -> None:
    memo: AnswerMemo[str] = AnswerMemo(10)
    inputs = (Inputs(),)
    memo.put(LANE, inputs, ("u1", recent("a", "b"), 10), "list")
    assert memo.get(LANE, inputs, ("u1", recent("c", "a", "b"), 10)) is None  # a folded event
    assert memo.get(LANE, inputs, ("u1", recent("a", "b"), 5)) is None
    assert memo.get(LANE, inputs, ("u2", recent("a", "b"), 10)) is None


def test_new_inputs_miss_even_when_equal_in_value_and_replace_the_old() -> None:
    memo: AnswerMemo[str] = AnswerMemo(10)
    titles = {"a": "Alien"}
    old = (Inputs(), titles)
    memo.put(LANE, old, "key", "list")
    assert memo.get(LANE, (Inputs(), titles), "key") is None  # refreshed item features
    assert memo.get(LANE, (old[0], dict(titles)), "key") is None  # new titles, same values
    new = (Inputs(), titles)
    memo.put(LANE, new, "key", "new list")
    assert memo.get(LANE, new, "key") == "new list"
    assert len(memo) == 1


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_answer_outlives_its_replaced_inputs_by_max_age_but_never_a_changed_row() -> None:
    clock = Clock()
    memo: AnswerMemo[str] = AnswerMemo(10, max_age=5.0, clock=clock)
    old, new = (Inputs(),), (Inputs(),)
    memo.put(LANE, old, ("u1", recent("a"), 10), "list")
    memo.put(LANE, old, ("u2", recent("b"), 10), "other")
    clock.now += 60  # however long the inputs stay current
    assert memo.get(LANE, old, ("u1", recent("a"), 10)) == "list"
    clock.now += 1
    # The item refresh: the first request to see the new inputs still gets the kept list.
    assert memo.get(LANE, new, ("u1", recent("a"), 10)) == "list"
    assert memo.get(LANE, new, ("u1", recent("c", "a"), 10)) is None  # the user's event
    clock.now += 4.9
    assert memo.get(LANE, new, ("u2", recent("b"), 10)) == "other"
    clock.now += 0.1  # 5 s after the refresh
    assert memo.get(LANE, new, ("u1", recent("a"), 10)) is None
    assert memo.get(LANE, new, ("u2", recent("b"), 10)) is None
    assert len(memo) == 0


def test_without_max_age_an_answer_lives_exactly_as_long_as_its_inputs() -> None:
    clock = Clock()
    memo: AnswerMemo[str] = AnswerMemo(10, clock=clock)
    old = (Inputs(),)
    memo.put(LANE, old, "key", "list")
    assert memo.get(LANE, (Inputs(),), "key") is None


def test_a_late_answer_from_the_previous_inputs_does_not_move_the_lane_back() -> None:
    """An inference that began before the refresh stores its answer after it."""
    clock = Clock()
    memo: AnswerMemo[str] = AnswerMemo(10, max_age=5.0, clock=clock)
    old, new = (Inputs(),), (Inputs(),)
    memo.put(LANE, old, "a", "old a")
    memo.put(LANE, new, "b", "new b")
    memo.put(LANE, old, "c", "late c")  # computed from the previous inputs
    assert memo.get(LANE, new, "b") == "new b"
    assert memo.get(LANE, new, "c") == "late c"  # within max_age of the refresh
    clock.now += 5
    assert memo.get(LANE, new, "b") == "new b", "the new inputs are still the current ones"
    assert memo.get(LANE, new, "c") is None and memo.get(LANE, new, "a") is None


def test_a_lane_lets_go_of_inputs_two_refreshes_old() -> None:
    memo: AnswerMemo[str] = AnswerMemo(10, max_age=5.0)
    first = Inputs()
    gone = weakref.ref(first)
    memo.put(LANE, (first,), "a", "list")
    memo.put(LANE, (Inputs(),), "b", "list")
    assert gone() is not None  # the previous inputs: a late answer may still name them
    memo.put(LANE, (Inputs(),), "c", "list")
    del first
    gc.collect()
    assert gone() is None


def test_lanes_are_apart_and_the_least_recently_used_go_first() -> None:
    memo: AnswerMemo[int] = AnswerMemo(2, lanes=2)
    first = (Inputs(),)
    memo.put("champion", first, "a", 1)
    memo.put("champion", first, "b", 2)
    assert memo.get("champion", first, "a") == 1  # now "b" is the least recently used
    memo.put("champion", first, "c", 3)
    assert [memo.get("champion", first, key) for key in "abc"] == [1, None, 3]
    other = (Inputs(),)
    memo.put("challenger", other, "a", 4)
    assert memo.get("champion", first, "a") == 1, "another lane leaves the champion's be"
    assert memo.get("challenger", first, "a") is None, "answers are the lane's own"
    memo.put("baseline", (Inputs(),), "a", 5)  # a third lane: the least recently used goes
    assert memo.get("challenger", other, "a") is None
    assert memo.get("champion", first, "a") == 1
    assert len(memo) == 3


def test_size_zero_keeps_nothing_and_unhashable_requests_are_not_kept() -> None:
    inputs = (Inputs(),)
    off: AnswerMemo[str] = AnswerMemo(0)
    off.put(LANE, inputs, "key", "list")
    assert off.get(LANE, inputs, "key") is None
    memo: AnswerMemo[str] = AnswerMemo(10)
    unhashable = ("u1", ["a", "b"], 10)
    memo.put(LANE, inputs, unhashable, "list")
    assert memo.get(LANE, inputs, unhashable) is None
    assert len(memo) == 0
