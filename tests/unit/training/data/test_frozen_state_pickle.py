"""A FrozenState pickles its users' lists as one tensor (`streamrec train` hands it to
Ray Train's worker through the object store)."""

from __future__ import annotations

import pickle

import torch

from models.cascade import ItemTable
from training.data.examples import FrozenState


def _state(lists: list[list[int]]) -> FrozenState:
    items = ItemTable(
        popularity=torch.rand(5), recency=torch.rand(5), ctr=torch.rand(5), categories=None
    )
    return FrozenState(
        at_ms=123,
        recent_items=[torch.tensor(values, dtype=torch.long) for values in lists],
        user_context=torch.rand(len(lists), 2),
        items=items,
    )


def test_a_pickled_state_comes_back_the_same_with_empty_lists_kept() -> None:
    state = _state([[3, 1, 4], [], [1], [], [5, 9, 2, 6]])
    back = pickle.loads(pickle.dumps(state))
    assert back.at_ms == 123
    assert [t.tolist() for t in back.recent_items] == [[3, 1, 4], [], [1], [], [5, 9, 2, 6]]
    assert all(t.dtype == torch.long for t in back.recent_items)
    assert torch.equal(back.user_context, state.user_context)
    assert torch.equal(back.items.popularity, state.items.popularity)
    # each list is its own tensor, not a view of one shared storage
    assert back.recent_items[0].untyped_storage().nbytes() == 3 * 8


def test_no_user_and_the_list_pickled_before_both_load() -> None:
    assert pickle.loads(pickle.dumps(_state([]))).recent_items == []
    old = _state([[2, 7]])
    earlier = object.__new__(FrozenState)
    earlier.__setstate__(dict(old.__dict__))  # the state as pickled before: the list
    assert [t.tolist() for t in earlier.recent_items] == [[2, 7]]


def test_the_pickle_is_one_tensor_not_one_per_user() -> None:
    many = _state([[n % 7, n % 5] for n in range(20_000)])
    # 40,000 longs, the lengths and the context: about 0.5 MB (a tensor per user: > 6 MB)
    assert len(pickle.dumps(many)) < 1_000_000
