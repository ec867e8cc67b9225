"""Answers kept while nothing they were computed from has changed.

A recommendation list is a pure function of the served set with its item features (or the
baseline's index and popularity), the catalogue's titles, and the request: the user, their
store row (``RecentItems``, read on every request) and ``k``. The API replaces those
objects whole when they change, never in place (``ServingSet``, ``BaselineIndex``,
``PopularityRanking``), so "the same objects and an equal request" means "the same
answer". :class:`AnswerMemo` keeps answers under that rule: a user's folded event changes
their row, so the next request misses and is computed afresh; an item refresh that
changed any row swaps the served set, so every answer of the old set is dropped. Freshness
is exactly that of computing every request, at the cost of a dictionary lookup when
nothing moved (a page reloaded, a second widget, a client polling).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

V = TypeVar("V")

# Generations kept at once: the champion's and a challenger's sets, each with the objects
# of the refresh before (a request that started on them may still put its answer).
GENERATIONS = 4


class AnswerMemo(Generic[V]):
    """Up to ``size`` answers per generation, least recently used dropped first.

    A generation is a tuple of objects (the served set, the titles, ...) compared by
    identity and held here, so an id is never reused while its answers are kept. Used from
    the event loop only: no lock.
    """

    def __init__(self, size: int, generations: int = GENERATIONS) -> None:
        self._size = size
        self._max_generations = generations
        self._generations: OrderedDict[tuple[int, ...], _Generation[V]] = OrderedDict()

    def get(self, inputs: tuple[object, ...], key: Hashable) -> V | None:
        generation = self._generation(inputs, create=False)
        if generation is None:
            return None
        try:
            answer = generation.answers.get(key)
        except TypeError:  # an unhashable request (a list where a tuple belongs): not kept
            return None
        if answer is not None:
            generation.answers.move_to_end(key)
        return answer

    def put(self, inputs: tuple[object, ...], key: Hashable, answer: V) -> None:
        if self._size <= 0:
            return
        try:
            hash(key)
        except TypeError:
            return
        generation = self._generation(inputs, create=True)
        assert generation is not None
        generation.answers[key] = answer
        generation.answers.move_to_end(key)
        while len(generation.answers) > self._size:
            generation.answers.popitem(last=False)

    def __len__(self) -> int:
        return sum(len(g.answers) for g in self._generations.values())

    def _generation(self, inputs: tuple[object, ...], *, create: bool) -> _Generation[V] | None:
        ids = tuple(id(part) for part in inputs)
        generation = self._generations.get(ids)
        if generation is not None and all(
            held is part for held, part in zip(generation.inputs, inputs, strict=True)
        ):
            self._generations.move_to_end(ids)
            return generation
        if not create:
            return None
        generation = _Generation(inputs)
        self._generations[ids] = generation
        while len(self._generations) > self._max_generations:
            self._generations.popitem(last=False)
        return generation


class _Generation(Generic[V]):
    __slots__ = ("answers", "inputs")

    def __init__(self, inputs: tuple[object, ...]) -> None:
        self.inputs = inputs  # held: their ids stay theirs while the answers are kept
        self.answers: OrderedDict[Hashable, V] = OrderedDict()


__all__ = ["AnswerMemo"]
