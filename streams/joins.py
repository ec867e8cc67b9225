"""The impression-click join by ``request_id``: which clicks were on items a request served.

Both topics are keyed by ``user_id`` through the one producer (``streams.producer``) and
have the same partition count, so a request's RecommendationServed and its Clicks are in
partitions with the same number: one agent reading both topics sees them together, and a
table keyed by ``request_id`` (``RequestState``) holds what each request served.

Rules, all by event time, so the result is a function of the log and not of the order in
which the two topics happen to be read:

- every item served in a request is one IMPRESSION of that item;
- a click is an ATTRIBUTED_CLICK of its item when that request served the item and the
  click's event time is within ``[served - CLOCK_SKEW_MS, served + ATTRIBUTION_WINDOW_MS]``;
  at most one per item and request (a second click on the same impression adds nothing,
  so the click-through rate stays a share of impressions);
- a click whose request is not known yet is kept pending in the request's state and
  joined when the impression arrives (the topics are read independently, and a click can
  be read first).

State is bounded by two event-time clocks per partition, one per topic (the highest event
time read there; kept in memory, so after a restart they start low and expire later,
never earlier):

- a pending click is given up once the recommendations clock of its partition passes
  ``click + CLOCK_SKEW_MS + GRACE_MS``: its impression would be more than ``GRACE_MS``
  out of order within its own partition. The click is dropped from the join and counted
  (``streamrec_join_expired{what="pending_click"}``); it still counts in the item's
  ``click_count``, only not as attributed. If the impression does arrive later, its
  impressions count and that click does not.
- a served request is forgotten once the clicks clock of its partition passes
  ``served + ATTRIBUTION_WINDOW_MS + GRACE_MS``; a click on it arriving later than that
  finds no request, waits as pending and is given up as above. In the worker, a
  partition whose logged clicks are all folded moves its clicks clock up to its
  recommendations clock (``FaustJoin.clicks_caught_up``), so a partition nobody clicks
  in forgets its requests too.

Only events more than ``GRACE_MS`` out of order within their own partition (within a
topic, or a click against the served lists logged before it) can make the live worker
and a backfill disagree.

Finding what the clocks passed costs what is due, not what is held: ``ExpiryIndex`` keeps
each request's deadline in a heap per partition and reason (the worker's was a walk of
the whole table every minute of event time: 65 % of its CPU at 400 lists/s). A stored
request keeps its items but not the impressions it sent (``RequestState.served_at``
gives them again), as compact bytes (``streams.folding.stored_json``).

Exactly-once: the request state remembers, per source partition, the offset it has
folded up to (``streams.folding``'s rule), and every entry it has sent to the item side
(``emitted``). An event at or below that offset (redelivered after a crash) sends its
entries again; the item side keeps each (source, offset) once, so the re-send repairs an
entry lost in the crash and doubles nothing. The join's entries use their own sources
(``join:<topic>:<partition>``) so they never share an offset sequence with the
REC_CLICK entries of the same click.

Why not a Faust windowed table for the short-window count (faust-streaming 0.15.3,
``faust/tables/base.py``): windows expire by wall-clock time (``_del_old_keys`` compares
with ``time.time()``), so a replay of old events expires its windows at once; the event
time it can window by is the Kafka record timestamp (``relative_to_stream``) or a field of
a ``faust.Record`` value (``relative_to_field``), not our raw JSON; expired windows are
popped locally with no changelog tombstone, and windows restored from the changelog are
never registered for expiry, so after a restart they are kept forever. The window is
plain item state instead (``streams.folding.ItemState.window``).
"""

from __future__ import annotations

import enum
import heapq
from dataclasses import dataclass, field
from typing import Any, cast

import faust
import orjson
from faust.types import EventT, TableT
from prometheus_client import CollectorRegistry, Counter, Gauge

from streams.events import Click, RecommendationServed
from streams.faust_patches import set_current_event
from streams.folding import ATTRIBUTED_CLICK, IMPRESSION, Entry, source_key, stored_json

ATTRIBUTION_WINDOW_MS = 3600 * 1000  # a click counts for an impression up to 1 h after it
CLOCK_SKEW_MS = 60 * 1000  # or up to 1 min before it: a client's clock can run behind
GRACE_MS = 10 * 60 * 1000  # how far out of event-time order an event may arrive


def join_source(source: str) -> str:
    """The item-side source of the join's entries caused by events of ``source``."""
    return f"join:{source}"


def attributable(served_time: int, click_time: int) -> bool:
    return served_time - CLOCK_SKEW_MS <= click_time <= served_time + ATTRIBUTION_WINDOW_MS


class Joined(enum.Enum):
    """What folding one positioned event into the join did."""

    IMPRESSIONS = "impressions"  # a request's items, with any pending clicks it joined
    ATTRIBUTED = "attributed"  # a click on an item its request served
    UNATTRIBUTED = "unattributed"  # a click on an item not served, too late, or repeated
    PENDING = "pending"  # a click whose request is not known yet
    REPEATED_REQUEST = "repeated_request"  # a second RecommendationServed of a request id
    REDELIVERED = "redelivered"  # at or below the folded offset: its entries sent again


@dataclass
class RequestState:
    """One request: what it served, which of its items were clicked, what waits for it."""

    partition: int  # of both topics: where the request's events are, and its changelog
    served_time: int | None = None  # None until the RecommendationServed is read
    items: list[str] = field(default_factory=list)  # served, in rank order, once each
    clicked: list[str] = field(default_factory=list)  # items with an attributed click
    pending: list[list[Any]] = field(default_factory=list)  # [item_id, event_time] clicks
    # Entries sent (``Entry``) but the impressions of ``served_at``, which ``items`` and
    # ``served_time`` give again: they were most of a stored request.
    emitted: list[list[Any]] = field(default_factory=list)
    offsets: dict[str, int] = field(default_factory=dict)  # highest folded, per partition
    served_at: list[Any] | None = None  # [source, offset] of the RecommendationServed folded

    def to_dict(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "served_time": self.served_time,
            "items": self.items,
            "clicked": self.clicked,
            "pending": self.pending,
            "emitted": self.emitted,
            "offsets": self.offsets,
            "served_at": self.served_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RequestState:
        """A state of ``to_dict``; one stored before ``served_at`` holds its impressions in
        ``emitted`` and has no ``served_at``, and is re-sent the same."""
        served = data.get("served_time")
        served_at = data.get("served_at")
        return cls(
            partition=int(data["partition"]),
            served_time=None if served is None else int(served),
            items=list(data["items"]),
            clicked=list(data["clicked"]),
            pending=[list(click) for click in data["pending"]],
            emitted=[list(entry) for entry in data["emitted"]],
            offsets=dict(data["offsets"]),
            served_at=None if served_at is None else [str(served_at[0]), int(served_at[1])],
        )

    def to_json(self) -> bytes:
        """The state as the worker's table and changelog hold it: the JSON of ``to_dict``
        (as bytes, for the reason ``streams.folding.UserState.from_json`` gives)."""
        return stored_json(self.to_dict())

    @classmethod
    def from_json(cls, value: bytes) -> RequestState:
        return cls.from_dict(orjson.loads(value))

    def _emit(self, source: str, offset: int, item_id: str, kind: str, at: int) -> Entry:
        entry: Entry = (join_source(source), offset, item_id, kind, at)
        self.emitted.append(list(entry))
        return entry

    def _impressions(self, source: str, offset: int) -> list[Entry]:
        assert self.served_time is not None
        name, at = join_source(source), self.served_time
        return [(name, offset, item_id, IMPRESSION, at) for item_id in self.items]

    def _sent_at(self, source: str, offset: int) -> list[Entry]:
        name = join_source(source)
        sent = self._impressions(source, offset) if self.served_at == [source, offset] else []
        return sent + [
            (str(s), int(o), str(i), str(k), int(t))
            for s, o, i, k, t in self.emitted
            if s == name and o == offset
        ]

    def _attribute(self, source: str, offset: int, item_id: str, click_time: int) -> Entry | None:
        assert self.served_time is not None
        if item_id not in self.items or item_id in self.clicked:
            return None
        if not attributable(self.served_time, click_time):
            return None
        self.clicked.append(item_id)
        # At the later of the two times: the row that counts it is never before either.
        at = max(click_time, self.served_time)
        return self._emit(source, offset, item_id, ATTRIBUTED_CLICK, at)


def join_served(
    state: RequestState, served: RecommendationServed, source: str, offset: int
) -> tuple[Joined, list[Entry]]:
    """Fold a RecommendationServed read at ``offset`` of ``source``; the entries to send."""
    if offset <= state.offsets.get(source, -1):
        return Joined.REDELIVERED, state._sent_at(source, offset)
    state.offsets[source] = offset
    if state.served_time is not None:
        return Joined.REPEATED_REQUEST, []
    state.served_time = served.event_time
    state.served_at = [source, offset]
    for recommended in sorted(served.items, key=lambda item: item.rank):
        if recommended.item_id not in state.items:
            state.items.append(recommended.item_id)
    entries = state._impressions(source, offset)  # not kept in ``emitted``: ``_sent_at``
    for item_id, click_time in state.pending:
        entry = state._attribute(source, offset, str(item_id), int(click_time))
        if entry is not None:
            entries.append(entry)
    state.pending = []
    return Joined.IMPRESSIONS, entries


def join_click(
    state: RequestState, click: Click, source: str, offset: int
) -> tuple[Joined, list[Entry]]:
    """Fold a Click read at ``offset`` of ``source``; the entries to send."""
    if offset <= state.offsets.get(source, -1):
        return Joined.REDELIVERED, state._sent_at(source, offset)
    state.offsets[source] = offset
    if state.served_time is None:
        state.pending.append([click.item_id, click.event_time])
        return Joined.PENDING, []
    entry = state._attribute(source, offset, click.item_id, click.event_time)
    if entry is None:
        return Joined.UNATTRIBUTED, []
    return Joined.ATTRIBUTED, [entry]


@dataclass
class JoinClocks:
    """The highest event time read per partition of each topic (``served``, ``clicks``).

    ``caught_up``: per partition, a served clock at which every click logged before it
    had been folded (``FaustJoin.clicks_caught_up``); the clicks clock is read as at
    least that, so a partition nobody clicks in still forgets its requests.
    """

    served: dict[int, int] = field(default_factory=dict)
    clicks: dict[int, int] = field(default_factory=dict)
    caught_up: dict[int, int] = field(default_factory=dict)

    def saw(self, event: RecommendationServed | Click, partition: int) -> None:
        clock = self.served if isinstance(event, RecommendationServed) else self.clicks
        clock[partition] = max(clock.get(partition, 0), event.event_time)

    def passing(self, why: str, partition: int) -> int:
        """The clock that forgets a state for ``why`` (``deadline``): the other topic's."""
        if why == "pending_click":
            return self.served.get(partition, 0)
        return max(self.clicks.get(partition, 0), self.caught_up.get(partition, 0))


def deadline(state: RequestState) -> tuple[str, int]:
    """What forgetting ``state`` gives up (``pending_click`` or ``request``) and the event
    time its partition's clock for that (``JoinClocks.passing``) must pass first."""
    if state.served_time is None:
        newest_click = max((int(t) for _, t in state.pending), default=0)
        return "pending_click", newest_click + CLOCK_SKEW_MS + GRACE_MS
    return "request", state.served_time + ATTRIBUTION_WINDOW_MS + GRACE_MS


def expiry(state: RequestState, clocks: JoinClocks) -> str | None:
    """Why ``state`` can be forgotten now (``pending_click`` or ``request``), or None."""
    why, bound = deadline(state)
    return why if clocks.passing(why, state.partition) > bound else None


class ExpiryIndex:
    """The requests of the join by deadline (``deadline``): a heap per partition and
    reason, so finding what the clocks passed costs what is due, not every request held.

    A request whose deadline moves (a newer pending click, its impression read) is pushed
    again; the entry it leaves behind no longer matches ``_deadline`` and is skipped when
    it comes up.
    """

    def __init__(self) -> None:
        self._deadline: dict[str, tuple[int, str, int]] = {}  # id -> (partition, why, bound)
        self._heaps: dict[tuple[int, str], list[tuple[int, str]]] = {}

    def __len__(self) -> int:
        return len(self._deadline)

    def note(self, request_id: str, state: RequestState) -> None:
        """Index ``state`` as it now is."""
        why, bound = deadline(state)
        key = (state.partition, why, bound)
        if self._deadline.get(request_id) != key:
            self._deadline[request_id] = key
            heapq.heappush(self._heaps.setdefault((state.partition, why), []), (bound, request_id))

    def due(self, partition: int, clocks: JoinClocks) -> list[str]:
        """The requests of ``partition`` whose deadline its clocks passed, dropped from the
        index, in deadline order."""
        found = []
        for why in ("pending_click", "request"):
            heap = self._heaps.get((partition, why))
            clock = clocks.passing(why, partition)
            while heap and clock > heap[0][0]:
                bound, request_id = heapq.heappop(heap)
                if self._deadline.get(request_id) == (partition, why, bound):
                    del self._deadline[request_id]
                    found.append(request_id)
        return found


@dataclass
class RequestJoin:
    """The join over a plain dict of request states: what backfill and the tests run.

    The worker runs the same functions over its Faust table (``streams.agents``).
    """

    requests: dict[str, RequestState] = field(default_factory=dict)
    clocks: JoinClocks = field(default_factory=JoinClocks)
    outcomes: dict[Joined, int] = field(default_factory=dict)
    given_up: dict[str, int] = field(default_factory=dict)  # expired, by reason
    index: ExpiryIndex = field(default_factory=ExpiryIndex)

    def fold(
        self, event: RecommendationServed | Click, source: str, partition: int, offset: int
    ) -> list[Entry]:
        state = self.requests.get(event.request_id)
        if state is None:
            state = self.requests[event.request_id] = RequestState(partition)
        self.clocks.saw(event, partition)
        if isinstance(event, RecommendationServed):
            outcome, entries = join_served(state, event, source, offset)
        else:
            outcome, entries = join_click(state, event, source, offset)
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        self.index.note(event.request_id, state)
        return entries

    def expire(self) -> None:
        """Forget the requests the clocks have passed (``expiry``)."""
        partitions = set(self.clocks.served) | set(self.clocks.clicks)
        for request_id in [r for p in sorted(partitions) for r in self.index.due(p, self.clocks)]:
            state = self.requests.pop(request_id)
            why = deadline(state)[0]
            self.given_up[why] = self.given_up.get(why, 0) + given_up_count(state, why)


def given_up_count(state: RequestState, why: str) -> int:
    """What forgetting ``state`` gives up: its pending clicks, or one request."""
    return len(state.pending) if why == "pending_click" else 1


@dataclass
class JoinMetrics:
    outcomes: Counter
    given_up: Counter
    held: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> JoinMetrics:
        return cls(
            outcomes=Counter(
                "streamrec_join_events",
                "Recommendations and clicks folded into the impression-click join, by outcome",
                ["outcome"],
                registry=registry,
            ),
            given_up=Counter(
                "streamrec_join_expired",
                "Join state forgotten by event time: pending clicks whose request never came "
                "(pending_click), and served requests past their attribution window (request)",
                ["what"],
                registry=registry,
            ),
            held=Gauge(
                "streamrec_join_requests_held",
                "Requests the impression-click join holds (served lists and pending clicks of "
                "this worker's partitions), until their attribution window or grace passes",
                registry=registry,
            ),
        )


class FaustJoin:
    """The join over the worker's Faust table of request states, one batch at a time.

    Its ``ExpiryIndex`` covers the table's states of the partitions it has swept: a
    partition's are indexed by one walk of the table the first time it is swept, and again
    after a rebalance (``rebalanced``), when the table may have recovered states of it
    (Faust's in-memory store keeps a revoked partition's keys, and a standby partition
    becomes active with states the index never saw).
    """

    def __init__(self, table: TableT, metrics: JoinMetrics) -> None:
        self._table = table
        self._metrics = metrics
        self._clocks = JoinClocks()
        self._index = ExpiryIndex()
        self._indexed: set[int] = set()  # partitions whose stored states are in the index
        self._clicks_folded: dict[int, int] = {}  # partition -> next offset after a click

    def served_clocks(self) -> dict[int, int]:
        """The served clock of each partition now (for ``clicks_caught_up``)."""
        return dict(self._clocks.served)

    def clicks_caught_up(
        self, served: dict[int, int], logged: dict[int, int], folded: dict[int, int]
    ) -> list[int]:
        """Let the clicks clock of each partition whose clicks were all folded move to its
        served clock as it was before they were counted; the partitions it moved.

        ``served``: ``served_clocks()`` taken first; ``logged``: then, the end offset of
        each partition of the clicks topic; ``folded``: an offset below which every click
        has been folded (committed, or the log's start), besides those this join folded
        since. Where every click logged by then is folded, any click still to come was
        logged after the served lists behind ``served``: one that a request forgotten by
        this could have counted is more than ``GRACE_MS`` out of order against them, the
        bound the join already keeps within each topic. A backfill reads clicks that late
        and counts them; the live worker does not.
        """
        moved = []
        for partition, end in logged.items():
            position = max(self._clicks_folded.get(partition, 0), folded.get(partition, 0))
            clock = served.get(partition, 0)
            if position >= end and clock > self._clocks.caught_up.get(partition, 0):
                self._clocks.caught_up[partition] = clock
                moved.append(partition)
        return moved

    def rebalanced(self) -> None:
        """Index every partition's stored states afresh when it is next swept (those of a
        partition this worker no longer has are dropped with the old index)."""
        self._index = ExpiryIndex()
        self._indexed.clear()

    def fold_batch(
        self, stream: faust.StreamT, events: list[tuple[EventT, RecommendationServed | Click]]
    ) -> list[Entry]:
        """Fold a batch's decoded events; write and expire their requests; the entries."""
        changed: dict[str, RequestState] = {}
        last_event: dict[str, EventT] = {}
        last_of_partition: dict[int, EventT] = {}
        entries: list[Entry] = []
        for event, decoded in events:
            message = event.message
            partition = message.partition
            source = source_key(message.topic, partition)
            request_id = decoded.request_id
            state = changed.get(request_id)
            if state is None:
                data = self._table.get(request_id)
                state = RequestState.from_json(data) if data else RequestState(partition)
            self._clocks.saw(decoded, partition)
            if isinstance(decoded, RecommendationServed):
                outcome, new = join_served(state, decoded, source, message.offset)
            else:
                outcome, new = join_click(state, decoded, source, message.offset)
                folded = self._clicks_folded.get(partition, 0)
                self._clicks_folded[partition] = max(folded, message.offset + 1)
            self._metrics.outcomes.labels(outcome.value).inc()
            entries.extend(new)
            last_of_partition[partition] = event
            if outcome is not Joined.REDELIVERED:
                changed[request_id] = state
                last_event[request_id] = event
        self._index_stored(set(last_of_partition) - self._indexed, changed)
        for request_id, state in changed.items():
            self._index.note(request_id, state)
        forgotten = self._due(set(last_of_partition), changed)
        arriving = cast(faust.Stream, stream).current_event
        # A table write goes to the changelog partition of the stream's current event:
        # make each key's own event current first, so a restart recovers it with the
        # partition that holds its events.
        for request_id, state in changed.items():
            if request_id in forgotten:
                continue
            set_current_event(stream, last_event[request_id])
            self._table[request_id] = state.to_json()
        for request_id, (state, why) in forgotten.items():
            set_current_event(stream, last_of_partition[state.partition])
            if request_id in self._table:
                del self._table[request_id]
            self._metrics.given_up.labels(why).inc(given_up_count(state, why))
        set_current_event(stream, arriving)
        self._metrics.held.set(len(self._index))
        return entries

    def _index_stored(self, partitions: set[int], changed: dict[str, RequestState]) -> None:
        """Index the table's states of ``partitions`` (but ``changed``, indexed as they
        are now) in one walk."""
        if not partitions:
            return
        for request_id, data in self._table.items():
            if data and request_id not in changed:
                state = RequestState.from_json(data)
                if state.partition in partitions:
                    self._index.note(request_id, state)
        self._indexed |= partitions

    def _due(
        self, partitions: set[int], changed: dict[str, RequestState]
    ) -> dict[str, tuple[RequestState, str]]:
        """The requests of ``partitions`` the clocks passed, with why, to forget."""
        forgotten: dict[str, tuple[RequestState, str]] = {}
        for partition in sorted(partitions):
            for request_id in self._index.due(partition, self._clocks):
                state = changed.get(request_id)
                if state is None:
                    data = self._table.get(request_id)
                    state = RequestState.from_json(data) if data else None
                if state is None:
                    continue
                why = expiry(state, self._clocks)
                if why is not None:
                    forgotten[request_id] = (state, why)
                else:  # moved since it was indexed (a standby's write): as it is now
                    self._index.note(request_id, state)
        return forgotten
