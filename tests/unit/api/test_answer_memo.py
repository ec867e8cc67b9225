"""AnswerMemo: an answer is kept only while its inputs are the very same objects."""

from __future__ import annotations

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
    # One generation per lane: the old features' answers (and the objects) are let go.
    assert memo.get(LANE, old, "key") is None
    assert memo.get(LANE, new, "key") == "new list"
    assert len(memo) == 1


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
