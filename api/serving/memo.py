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

# Lanes kept at once: the champion's set, a challenger's, the baseline, one more.
LANES = 4


class AnswerMemo(Generic[V]):
    """Up to ``size`` answers per lane, least recently used dropped first.

    A lane is one source of answers (a loaded model set, the baseline) and holds the
    answers of one generation of its inputs: a tuple of objects (the set with its item
    features, the titles, ...) compared by identity and held here, so an id is never
    reused while its answers are kept. New inputs in a lane replace the old ones and
    their answers, so a lane never keeps an outdated set's item features alive. Used
    from the event loop only: no lock.
    """

    def __init__(self, size: int, lanes: int = LANES) -> None:
        self._size = size
        self._max_lanes = lanes
        self._lanes: OrderedDict[int, _Lane[V]] = OrderedDict()

    def get(self, lane: object, inputs: tuple[object, ...], key: Hashable) -> V | None:
        held = self._held(lane, inputs)
        if held is None:
            return None
        try:
            answer = held.answers.get(key)
        except TypeError:  # an unhashable request (a list where a tuple belongs): not kept
            return None
        if answer is not None:
            held.answers.move_to_end(key)
            self._lanes.move_to_end(id(lane))
        return answer

    def put(self, lane: object, inputs: tuple[object, ...], key: Hashable, answer: V) -> None:
        if self._size <= 0:
            return
        try:
            hash(key)
        except TypeError:
            return
        held = self._held(lane, inputs)
        if held is None:
            held = self._lanes[id(lane)] = _Lane(lane, inputs)
        self._lanes.move_to_end(id(lane))
        while len(self._lanes) > self._max_lanes:
            self._lanes.popitem(last=False)
        held.answers[key] = answer
        held.answers.move_to_end(key)
        while len(held.answers) > self._size:
            held.answers.popitem(last=False)

    def __len__(self) -> int:
        return sum(len(held.answers) for held in self._lanes.values())

    def _held(self, lane: object, inputs: tuple[object, ...]) -> _Lane[V] | None:
        """The lane's answers if they were computed from these very inputs."""
        held = self._lanes.get(id(lane))
        if held is None or held.lane is not lane or not held.holds(inputs):
            return None
        return held


class _Lane(Generic[V]):
    __slots__ = ("answers", "inputs", "lane")

    def __init__(self, lane: object, inputs: tuple[object, ...]) -> None:
        # Held: their ids stay theirs while the answers are kept.
        self.lane, self.inputs = lane, inputs
        self.answers: OrderedDict[Hashable, V] = OrderedDict()

    def holds(self, inputs: tuple[object, ...]) -> bool:
        return len(inputs) == len(self.inputs) and all(
            held is part for held, part in zip(self.inputs, inputs, strict=True)
        )


__all__ = ["AnswerMemo"]
