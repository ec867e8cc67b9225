"""AnswerMemo: an answer is kept only while its inputs are the very same objects."""

from __future__ import annotations

from api.ports import RecentItems
from api.serving.memo import AnswerMemo


class Inputs:
    """Stands for a served set: compared by identity only."""


def recent(*items: str) -> RecentItems:
    return RecentItems(items=items, times=tuple(range(len(items))), seen=frozenset(items))


def test_an_equal_request_on_the_same_inputs_is_a_hit() -> None:
    memo: AnswerMemo[str] = AnswerMemo(10)
    inputs = (Inputs(), {"a": "Alien"})
    memo.put(inputs, ("u1", recent("a", "b"), 10), "list")
    # A row read again is a new object, equal in value: the same answer.
    assert memo.get(inputs, ("u1", recent("a", "b"), 10)) == "list"


def test_a_changed_row_k_or_user_misses() -> None:
    memo: AnswerMemo[str] = AnswerMemo(10)
    inputs = (Inputs(),)
    memo.put(inputs, ("u1", recent("a", "b"), 10), "list")
    assert memo.get(inputs, ("u1", recent("c", "a", "b"), 10)) is None  # a folded event
    assert memo.get(inputs, ("u1", recent("a", "b"), 5)) is None
    assert memo.get(inputs, ("u2", recent("a", "b"), 10)) is None


def test_new_inputs_miss_even_when_equal_in_value() -> None:
    memo: AnswerMemo[str] = AnswerMemo(10)
    titles = {"a": "Alien"}
    memo.put((Inputs(), titles), "key", "list")
    assert memo.get((Inputs(), titles), "key") is None  # another served set
    assert memo.get((Inputs(), dict(titles)), "key") is None


def test_least_recently_used_answers_and_generations_go_first() -> None:
    memo: AnswerMemo[int] = AnswerMemo(2, generations=2)
    first = (Inputs(),)
    memo.put(first, "a", 1)
    memo.put(first, "b", 2)
    assert memo.get(first, "a") == 1  # now "b" is the least recently used
    memo.put(first, "c", 3)
    assert (memo.get(first, "a"), memo.get(first, "b"), memo.get(first, "c")) == (1, None, 3)
    second, third = (Inputs(),), (Inputs(),)
    memo.put(second, "a", 4)
    memo.put(third, "a", 5)  # a third generation: the oldest, ``first``, is dropped
    assert memo.get(first, "a") is None
    assert (memo.get(second, "a"), memo.get(third, "a")) == (4, 5)
    assert len(memo) == 2


def test_size_zero_keeps_nothing_and_unhashable_requests_are_not_kept() -> None:
    inputs = (Inputs(),)
    off: AnswerMemo[str] = AnswerMemo(0)
    off.put(inputs, "key", "list")
    assert off.get(inputs, "key") is None
    memo: AnswerMemo[str] = AnswerMemo(10)
    unhashable = ("u1", ["a", "b"], 10)
    memo.put(inputs, unhashable, "list")
    assert memo.get(inputs, unhashable) is None
    assert len(memo) == 0
