"""Answers kept while nothing they were computed from has changed, or changed only on the
item side and only a moment ago.

A recommendation list is a pure function of the served set with its item features (or the
baseline's index and popularity), the catalogue's titles, and the request: the user, their
store row (``RecentItems``, read on every request) and ``k``. The API replaces those
objects whole when they change, never in place (``ServingSet``, ``BaselineIndex``,
``PopularityRanking``), so "the same objects and an equal request" means "the same
answer". :class:`AnswerMemo` keeps answers under that rule: a user's folded event changes
their row, so the next request misses and is computed afresh, always.

The objects (a lane's *inputs*) change with every item refresh that changed a row: on a
busy stream, every few seconds, which would drop every kept answer each time. So an
answer computed from inputs that have since been replaced is still served for
``max_age`` seconds after they were replaced (``STREAMREC_API_ANSWER_MAX_ITEM_AGE_SECONDS``):
a user whose own row has not changed may get a list whose item features are that much
older than the newest ones. A user's own events are never behind: the row is part of the
key. With ``max_age`` 0, an answer lives exactly as long as its inputs.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, NamedTuple, TypeVar

V = TypeVar("V")

# Lanes kept at once: the champion's set, a challenger's, the baseline, one more.
LANES = 4


class AnswerMemo(Generic[V]):
    """Up to ``size`` answers per lane, least recently used dropped first.

    A lane is one source of answers (a loaded model set, the baseline) and holds its
    current inputs, a tuple of objects (the set with its item features, the titles, ...)
    compared by identity and held here, so an id is never reused while it is compared.
    A lookup or a store with other inputs makes them the lane's current ones (the
    request read them after the last, so they are newer) unless they are the previous
    ones (a request that began before the refresh stores its answer late). A lane holds
    only its current and previous inputs, so an outdated set's item features are let go
    by the next refresh after. Used from the event loop only: no lock.
    """

    def __init__(
        self,
        size: int,
        lanes: int = LANES,
        max_age: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._size = size
        self._max_lanes = lanes
        self._max_age = max_age
        self._clock = clock
        self._lanes: OrderedDict[int, _Lane[V]] = OrderedDict()

    def get(self, lane: object, inputs: tuple[object, ...], key: Hashable) -> V | None:
        held = self._lanes.get(id(lane))
        if held is None or held.lane is not lane:
            return None
        now = self._clock()
        held.generation(inputs, now)
        try:
            kept = held.answers.get(key)
        except TypeError:  # an unhashable request (a list where a tuple belongs): not kept
            return None
        if kept is None:
            return None
        if not held.valid(kept.generation, now):
            del held.answers[key]
            return None
        held.answers.move_to_end(key)
        self._lanes.move_to_end(id(lane))
        return kept.answer

    def put(self, lane: object, inputs: tuple[object, ...], key: Hashable, answer: V) -> None:
        if self._size <= 0:
            return
        try:
            hash(key)
        except TypeError:
            return
        now = self._clock()
        held = self._lanes.get(id(lane))
        if held is None or held.lane is not lane:
            held = self._lanes[id(lane)] = _Lane(lane, inputs, self._max_age)
        generation = held.generation(inputs, now)
        self._lanes.move_to_end(id(lane))
        while len(self._lanes) > self._max_lanes:
            self._lanes.popitem(last=False)
        held.answers[key] = _Kept(answer, generation)
        held.answers.move_to_end(key)
        while len(held.answers) > self._size:
            held.answers.popitem(last=False)

    def __len__(self) -> int:
        return sum(len(held.answers) for held in self._lanes.values())


class _Kept(NamedTuple, Generic[V]):
    answer: V
    generation: int  # the lane's generation of inputs it was computed from


class _Lane(Generic[V]):
    __slots__ = ("answers", "current", "lane", "max_age", "number", "previous", "replaced_at")

    def __init__(self, lane: object, inputs: tuple[object, ...], max_age: float) -> None:
        # Held: their ids stay theirs while they are compared.
        self.lane, self.max_age = lane, max_age
        self.current: tuple[object, ...] = inputs
        self.previous: tuple[object, ...] | None = None
        self.number = 0  # the current inputs' generation
        self.replaced_at: dict[int, float] = {}  # earlier generation -> when it was replaced
        self.answers: OrderedDict[Hashable, _Kept[V]] = OrderedDict()

    def generation(self, inputs: tuple[object, ...], now: float) -> int:
        """The generation of ``inputs``: the current one, the previous one, or (other
        inputs) a new current one."""
        if _same(inputs, self.current):
            return self.number
        if self.previous is not None and _same(inputs, self.previous):
            return self.number - 1
        self.replaced_at = {
            number: replaced
            for number, replaced in self.replaced_at.items()
            if now - replaced < self.max_age
        }
        self.replaced_at[self.number] = now
        self.previous, self.current = self.current, inputs
        self.number += 1
        return self.number

    def valid(self, generation: int, now: float) -> bool:
        if generation == self.number:
            return True
        replaced = self.replaced_at.get(generation)
        return replaced is not None and now - replaced < self.max_age


def _same(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


__all__ = ["AnswerMemo"]
