"""Folding events into feature state: plain functions, testable without a broker.

The worker's batch functions (streams/batches.py) call these on each batch; the state
objects are what the Faust tables hold, and ``*_row`` turns them into the rows pushed to
Feast.

Exactly-once effect: a crash between folding and committing the consumer offset makes
Kafka redeliver events, and the item side also gets whole re-sent messages. Every state
therefore remembers, per source partition of the log, the highest offset it has folded
(``offsets``), and skips anything at or below it. Offsets only grow within a partition
and each partition is folded in offset order, so that one number per partition is an
exact memory of everything folded, however batches were cut before and after a crash.
A repeated ``event_id`` at a new offset (a producer retried a send) is caught by the
user side's kept event ids, as the offline history does.
"""

from __future__ import annotations

import bisect
import enum
import heapq
import operator
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from feature_repo import fields
from streams.events import Click, Interaction

# An item's trend score is an exponentially decayed count of its interactions: each
# interaction adds 1, and the sum halves every TREND_HALF_LIFE_MS of event time. It is
# stored as of the item's last_event_time; a reader decays it to its own "now". The sum is
# order-independent, so late events and batches from interleaved partitions fold to the
# same value (up to float rounding) whatever order they arrive in.
TREND_HALF_LIFE_MS = 7 * 24 * 3600 * 1000

# How many of a user's latest repeated sends (same event_id, new offset) the state keeps
# the positions of. Only a repeat redelivered after a restart is looked up, so the bound
# is on the repeats of one user between two commits of the worker (a batch or two).
DUPLICATES_KEPT = 50

# The short-window count is a hopping window by event time: an item's interactions in the
# hour ending at the 5-minute boundary after its newest interaction. It is kept as counts
# per 5-minute bucket (``ItemState.window``); buckets that fall out of the hour behind the
# newest one are dropped. The newest bucket only moves forward, and a bucket is dropped
# only once no later window can include it, so the count is the same whatever order the
# events arrive in; an event later than the hour behind the newest one is outside every
# window still to come and counts for nothing. (Why not a Faust windowed table: see
# ``streams.joins``.)
WINDOW_MS = 3600 * 1000
WINDOW_STEP_MS = 5 * 60 * 1000

# The attributed click-through rate is smoothed towards a prior of 1 click per 20
# impressions (a Beta(1, 19) prior, mean 0.05): an item served 3 times and clicked once
# reads (1 + 1) / (3 + 20) = 0.087, not 0.33, and an item never served reads 0.05. Twenty
# impressions is about two requests' worth, so the prior fades after a few requests.
CTR_PRIOR_CLICKS = 1.0
CTR_PRIOR_IMPRESSIONS = 20.0

# Co-visitation ("watched together"): each interaction pairs its item with the
# COVISIT_WINDOW items the user touched just before it (the session around it), each pair
# counting 1 (weighting by distance, or a window of 1 or 3, scored lower on MovieLens;
# docs/design.md, "The cascade"). Both items add the pair to their neighbours. The state
# keeps every neighbour's integer count, never evicting one: a sum of integers is the same
# however the pairs were batched, partitioned, replayed or ordered, where a bounded top-N
# with eviction (or a float sum) is not. The COVISIT_KEEP heaviest (ties to the smaller id)
# are chosen only when the row is written (``covisit_items``). ``covisit_total`` counts
# every pair: the norm of the cosine that serving scores with
# (``models.cascade.covisit_scores``). The cost, distinct neighbours per item, is in
# docs/design.md ("Exactly-once co-visitation").
COVISIT_WINDOW = 10
COVISIT_KEEP = 100


def stored_json(value: Any) -> bytes:
    """The JSON of ``value`` as bytes a table keeps: no larger than they are.

    orjson 3.12 and later return bytes in a buffer of at least 4 KiB (grown by powers of
    two) and never shrink it: a 250-byte request state kept that way holds 4 KiB, 16 times
    its size (``bench/join_table.py``; orjson's own issue tracker and Home Assistant's
    ``cached_json_fragment`` describe the same). A copy through a memoryview is sized
    to its length.
    """
    return bytes(memoryview(orjson.dumps(value)))


def source_key(topic: str, partition: int) -> str:
    """Names one partition of the log in a state's ``offsets``."""
    return f"{topic}:{partition}"


class Fold(enum.Enum):
    """What folding one positioned event did."""

    NEW = "new"  # folded now
    REDELIVERED = "redelivered"  # at or below the partition's folded offset: already in
    DUPLICATE = "duplicate"  # a new offset but an event_id already kept: a repeated send
    REDELIVERED_DUPLICATE = "redelivered duplicate"  # a DUPLICATE met again after a restart


def decayed(
    score: float, from_ms: int, to_ms: int, half_life_ms: int = TREND_HALF_LIFE_MS
) -> float:
    """``score`` as of ``from_ms`` seen from ``to_ms`` (grows when ``to_ms`` is earlier)."""
    return score * 2.0 ** (-(to_ms - from_ms) / half_life_ms)


@dataclass
class UserState:
    """A user's most recent interactions, newest first, plus counts.

    ``event_ids`` remembers the ids of the kept items so that an event sent twice is
    folded once. ``offsets`` remembers how far each partition is folded, so that an event
    redelivered after a restart (the worker stopped before committing its offset) is known
    as such; ``duplicates`` remembers where the latest repeated sends were, so that a
    redelivered one is still known as a repeat and never reaches the item side.
    """

    items: list[str] = field(default_factory=list)
    times: list[int] = field(default_factory=list)  # epoch ms, descending, parallel to items
    event_ids: list[str] = field(default_factory=list)
    # the log offset each kept item was folded at (a user's events are all in the one
    # partition of their key), -1 where unknown: ``covisit_pairs`` of a redelivered event
    # leave out the items folded after it
    positions: list[int] = field(default_factory=list)
    interaction_count: int = 0
    last_event_time: int = 0
    feature_time: int = 0  # timestamp of the last row pushed to Feast; see ``stamp``
    offsets: dict[str, int] = field(default_factory=dict)  # highest folded, per partition
    duplicates: list[tuple[str, int]] = field(default_factory=list)  # (partition, offset)

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature_time": self.feature_time,
            "items": self.items,
            "times": self.times,
            "event_ids": self.event_ids,
            "positions": self.positions,
            "interaction_count": self.interaction_count,
            "last_event_time": self.last_event_time,
            "offsets": self.offsets,
            "duplicates": self.duplicates,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> UserState:
        if not data:
            return cls()
        return cls(
            items=list(data["items"]),
            times=list(data["times"]),
            event_ids=list(data["event_ids"]),
            positions=list(data.get("positions", [-1] * len(data["items"]))),
            interaction_count=int(data["interaction_count"]),
            last_event_time=int(data["last_event_time"]),
            feature_time=int(data.get("feature_time", 0)),
            offsets=dict(data.get("offsets", {})),
            duplicates=[(source, offset) for source, offset in data.get("duplicates", [])],
        )

    def to_json(self) -> bytes:
        """The state as its table and changelog hold it: the JSON of ``to_dict``."""
        return stored_json(self.to_dict())

    @classmethod
    def from_json(cls, value: bytes | None) -> UserState:
        """The state of a ``to_json`` value (or an empty one for None), sharing nothing.

        The worker's tables keep states as these bytes rather than as objects: a user's
        state is about 150 objects (its items, times and event ids), and with tens of
        thousands of users, objects spread over a large heap made every read, copy and
        encoding of a state wait on memory (``bench/worker_throughput.py``, 1M log).
        Parsing gives fresh objects, so folding them cannot change what the table holds.
        """
        return cls.from_dict(orjson.loads(value)) if value else cls()


def fold_interaction(state: UserState, event: Interaction, keep: int, position: int = -1) -> bool:
    """Add one interaction to the user's recent items; False when it was already folded.

    Events are placed by event time, not arrival order, so a late event lands where it
    belongs (or falls off the end when it is older than everything kept). ``position``:
    the event's offset in its partition of the log (``UserState.positions``).
    """
    if event.event_id in state.event_ids:
        return False
    state.interaction_count += 1
    state.last_event_time = max(state.last_event_time, event.event_time)
    # times are descending; find the slot among equal-or-newer times (stable for ties).
    slot = bisect.bisect_right(state.times, -event.event_time, key=operator.neg)
    if slot >= keep:
        return True
    state.items.insert(slot, event.item_id)
    state.times.insert(slot, event.event_time)
    state.event_ids.insert(slot, event.event_id)
    state.positions.insert(slot, position)
    del state.items[keep:], state.times[keep:], state.event_ids[keep:], state.positions[keep:]
    return True


def covisit_pairs(
    state: UserState, event: Interaction, window: int = COVISIT_WINDOW, position: int = -1
) -> list[tuple[str, int]]:
    """The items ``event`` is co-visited with, and each pair's count (``COVISIT_WINDOW``).

    They are the user's ``window`` items just older than the event, nearest first, among
    those folded before it: those after it in ``state.items`` once it is folded, or after
    its slot when it is not. ``position`` is the event's offset: a state recovered ahead
    of the commit (the worker killed between its table write and its commit) already holds
    the user's later events, and a late one among them sits after this event; leaving out
    the items folded at a later offset gives the same pairs as the first time. The event's
    own item, and a repeat of an item nearer to it, pair with nothing.
    """
    if event.event_id in state.event_ids:
        slot = state.event_ids.index(event.event_id) + 1
    else:
        slot = bisect.bisect_right(state.times, -event.event_time, key=operator.neg)
    older = zip(state.items[slot:], state.positions[slot:], strict=True)
    before = [item for item, at in older if position < 0 or at < position][:window]
    pairs: list[tuple[str, int]] = []
    met = {event.item_id}
    for item in before:
        if item not in met:
            met.add(item)
            pairs.append((item, 1))
    return pairs


def merge_covisits(neighbours: dict[str, int], more: dict[str, int]) -> None:
    """Add ``more``'s pair counts to ``neighbours``: every neighbour is kept, so the sum
    is the same in any order and any cut of the pairs into deltas."""
    for item, count in more.items():
        neighbours[item] = neighbours.get(item, 0) + count


def heaviest_covisits(
    neighbours: dict[str, int], keep: int = COVISIT_KEEP
) -> list[tuple[str, int]]:
    """The ``keep`` neighbours with the most pairs, ties to the smaller id: chosen when a
    row is written or read, from counts that never depended on the order of folding."""
    pool = list(neighbours)
    if len(pool) > keep:  # only those at least as heavy as the keep-th count can make it
        cut = heapq.nlargest(keep, neighbours.values())[-1]
        pool = [item for item in pool if neighbours[item] >= cut]
    pool.sort()
    pool.sort(key=neighbours.__getitem__, reverse=True)  # stable: ties stay in id order
    return [(item, neighbours[item]) for item in pool[:keep]]


def fold_interaction_at(
    state: UserState, event: Interaction, keep: int, source: str, offset: int
) -> Fold:
    """``fold_interaction`` for an event read at ``offset`` of partition ``source``.

    A redelivered event that was a repeated send the first time is told apart: the item
    side must get the entries of redelivered events again (their first sending may never
    have arrived), but never those of a repeat, which it would count as new.
    """
    position = (source, offset)
    if offset <= state.offsets.get(source, -1):
        if position in state.duplicates:
            return Fold.REDELIVERED_DUPLICATE
        return Fold.REDELIVERED
    state.offsets[source] = offset
    if fold_interaction(state, event, keep, offset):
        return Fold.NEW
    state.duplicates.append(position)
    del state.duplicates[:-DUPLICATES_KEPT]
    return Fold.DUPLICATE


def window_bucket(event_time: int) -> int:
    """Start of the 5-minute bucket (``WINDOW_STEP_MS``) that holds ``event_time``."""
    return event_time - event_time % WINDOW_STEP_MS


def merge_window(window: dict[int, int], more: dict[int, int]) -> None:
    """Add ``more``'s bucket counts to ``window`` and drop the buckets out of its hour."""
    if not more:
        return  # nothing new, and what is kept was pruned when it was added
    for start, count in more.items():
        window[start] = window.get(start, 0) + count
    if window:
        oldest_kept = max(window) - WINDOW_MS + WINDOW_STEP_MS
        for start in [s for s in window if s < oldest_kept]:
            del window[start]


@dataclass
class ItemState:
    interaction_count: int = 0
    click_count: int = 0  # clicks on served recommendations (the clicks topic)
    purchase_count: int = 0
    last_event_time: int = 0
    trend_score: float = 0.0  # decayed interaction count as of last_event_time
    # The impression-click join (streams.joins): times the item was served in a
    # recommendation, and clicks on it in a request that served it (at most one per request).
    impression_count: int = 0
    attributed_click_count: int = 0
    join_time: int = 0  # newest event time of the joined entries (row timestamps cover it)
    window: dict[int, int] = field(default_factory=dict)  # bucket start -> interactions
    feature_time: int = 0  # timestamp of the last row pushed to Feast; see ``stamp``
    offsets: dict[str, int] = field(default_factory=dict)  # highest folded, per partition
    # Co-visitation (``COVISIT_*``): every neighbour's pair count, the count of every pair
    # ever, and the newest pair's event time (row timestamps cover it).
    covisits: dict[str, int] = field(default_factory=dict)
    covisit_total: int = 0
    covisit_time: int = 0

    @property
    def covisit_items(self) -> list[str]:
        """The COVISIT_KEEP heaviest neighbours, heaviest first (the row's field)."""
        return [item for item, _ in heaviest_covisits(self.covisits)]

    @property
    def covisit_weights(self) -> list[int]:
        """Their pair counts, parallel to ``covisit_items``."""
        return [count for _, count in heaviest_covisits(self.covisits)]

    @property
    def attributed_ctr(self) -> float:
        """Attributed clicks per impression, smoothed by the prior (``CTR_PRIOR_*``)."""
        return (self.attributed_click_count + CTR_PRIOR_CLICKS) / (
            self.impression_count + CTR_PRIOR_IMPRESSIONS
        )

    @property
    def interactions_1h(self) -> int:
        """Interactions in the hour ending at ``interactions_1h_end``."""
        return sum(self.window.values())

    @property
    def interactions_1h_end(self) -> int:
        """End (epoch ms, exclusive) of the hour ``interactions_1h`` counts; 0 if none."""
        return max(self.window) + WINDOW_STEP_MS if self.window else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature_time": self.feature_time,
            "interaction_count": self.interaction_count,
            "click_count": self.click_count,
            "purchase_count": self.purchase_count,
            "last_event_time": self.last_event_time,
            "trend_score": self.trend_score,
            "impression_count": self.impression_count,
            "attributed_click_count": self.attributed_click_count,
            "join_time": self.join_time,
            "window": sorted([start, count] for start, count in self.window.items()),
            "offsets": self.offsets,
            "covisits": self.covisits,
            "covisit_total": self.covisit_total,
            "covisit_time": self.covisit_time,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ItemState:
        if not data:
            return cls()
        window = {int(start): int(count) for start, count in data.get("window", [])}
        # JSON's object keys are strings and the counts were written as integers: a copy
        # is enough (converting each of a popular item's thousand neighbours was a tenth
        # of the worker's time under served lists).
        covisits = dict(data.get("covisits", {}))
        return cls(
            **{
                **data,
                "window": window,
                "offsets": dict(data.get("offsets", {})),
                "covisits": covisits,
            }
        )

    def to_json(self) -> bytes:
        """The state as its table and changelog hold it (see ``UserState.from_json``)."""
        return stored_json(self.to_dict())

    @classmethod
    def from_json(cls, value: bytes | None) -> ItemState:
        return cls.from_dict(orjson.loads(value)) if value else cls()


@dataclass
class ItemDelta:
    """What a batch of events adds to one item; sent re-keyed by item_id to the item side.

    One delta per item per batch (rather than one message per event) keeps the
    activity topic and its changelog small.
    """

    item_id: str
    interactions: int = 0
    purchases: int = 0
    rec_clicks: int = 0  # Click events: clicks on served recommendations
    last_event_time: int = 0
    trend: float = 0.0  # the interactions' decayed count as of last_event_time
    impressions: int = 0
    attributed_clicks: int = 0
    join_time: int = 0  # newest event time of the IMPRESSION and ATTRIBUTED_CLICK entries
    window: dict[int, int] = field(default_factory=dict)  # interactions per bucket start
    covisits: dict[str, int] = field(default_factory=dict)  # neighbour -> pair count
    covisit_time: int = 0  # newest event time of the COVISIT entries

    def add(self, event: Interaction | Click) -> None:
        self.add_kind(entry_kind(event), event.event_time)

    def add_covisit(self, other: str, count: int, event_time: int) -> None:
        """One co-visitation pair with ``other`` (``covisit_pairs``); not an interaction of
        this item, so its recency stays."""
        self.covisits[other] = self.covisits.get(other, 0) + count
        self.covisit_time = max(self.covisit_time, event_time)

    def add_kind(self, kind: str, event_time: int, *payload: Any) -> None:
        """Add one event of ``kind`` (an ``ENTRY_KINDS`` letter) at ``event_time``.

        The joined kinds are not interactions of the item: they leave its
        ``last_event_time`` (its recency) alone and move ``join_time`` instead. A COVISIT
        entry's payload is the other item and the pair's count.
        """
        if kind == COVISIT:
            other, count = payload
            self.add_covisit(str(other), int(count), event_time)
            return
        if kind in (IMPRESSION, ATTRIBUTED_CLICK):
            if kind == IMPRESSION:
                self.impressions += 1
            else:
                self.attributed_clicks += 1
            self.join_time = max(self.join_time, event_time)
            return
        if kind == REC_CLICK:
            self.rec_clicks += 1
        elif kind in (VIEW, PURCHASE):
            self.interactions += 1
            if kind == PURCHASE:
                self.purchases += 1
            self._add_trend(1.0, event_time)
            bucket = window_bucket(event_time)
            self.window[bucket] = self.window.get(bucket, 0) + 1
        else:
            raise ValueError(f"unknown item entry kind {kind!r}")
        self.last_event_time = max(self.last_event_time, event_time)

    def _add_trend(self, score: float, at_ms: int) -> None:
        if at_ms > self.last_event_time:  # move the reference time forward first
            self.trend = decayed(self.trend, self.last_event_time, at_ms)
            self.last_event_time = at_ms
        self.trend += decayed(score, at_ms, self.last_event_time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "interactions": self.interactions,
            "purchases": self.purchases,
            "rec_clicks": self.rec_clicks,
            "last_event_time": self.last_event_time,
            "trend": self.trend,
            "impressions": self.impressions,
            "attributed_clicks": self.attributed_clicks,
            "join_time": self.join_time,
            "window": sorted([start, count] for start, count in self.window.items()),
            "covisits": sorted([item, count] for item, count in self.covisits.items()),
            "covisit_time": self.covisit_time,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ItemDelta:
        return cls(
            item_id=str(data["item_id"]),
            interactions=int(data["interactions"]),
            purchases=int(data["purchases"]),
            rec_clicks=int(data["rec_clicks"]),
            last_event_time=int(data["last_event_time"]),
            trend=float(data.get("trend", 0.0)),
            impressions=int(data.get("impressions", 0)),
            attributed_clicks=int(data.get("attributed_clicks", 0)),
            join_time=int(data.get("join_time", 0)),
            window={int(start): int(count) for start, count in data.get("window", [])},
            covisits={str(item): int(count) for item, count in data.get("covisits", [])},
            covisit_time=int(data.get("covisit_time", 0)),
        )


def item_deltas(events: Iterable[Interaction | Click]) -> dict[str, ItemDelta]:
    deltas: dict[str, ItemDelta] = {}
    for event in events:
        deltas.setdefault(event.item_id, ItemDelta(event.item_id)).add(event)
    return deltas


# Kinds of entry in an ItemEntries message.
VIEW, PURCHASE, REC_CLICK = "v", "p", "c"  # VIEW: any interaction that is not a purchase
# From the impression-click join (streams.joins): the item was served in a request, and a
# click on it in that request.
IMPRESSION, ATTRIBUTED_CLICK = "i", "a"
# A co-visitation pair (``covisit_pairs``): the entry carries the other item and the count.
COVISIT = "n"
ENTRY_KINDS = (VIEW, PURCHASE, REC_CLICK, IMPRESSION, ATTRIBUTED_CLICK, COVISIT)


@dataclass
class ItemEntries:
    """What one batch adds to one item from one partition of the log, event by event.

    The item side folds only the entries above its folded offset for ``source``, so a
    message sent again after a crash, or cut differently, adds nothing twice. One message
    per item and partition per batch; an entry is ``[offset, kind, event_time]``, and a
    COVISIT entry ``[offset, kind, event_time, other_item, count]``.
    """

    item_id: str
    source: str
    entries: list[list[Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "source": self.source, "entries": self.entries}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ItemEntries:
        return cls(
            item_id=str(data["item_id"]),
            source=str(data["source"]),
            entries=[list(entry) for entry in data["entries"]],
        )


def entries_of(value: dict[str, Any]) -> list[ItemEntries]:
    """The ``ItemEntries`` of one item-activity message.

    The worker sends one message per destination partition per batch, ``{"items": [...]}``
    with one ``ItemEntries`` per item; a single ``ItemEntries`` (the earlier format, one
    message per item) is still read, so messages already in the topic fold after an upgrade.
    """
    if "items" in value:
        return [ItemEntries.from_dict(item) for item in value["items"]]
    return [ItemEntries.from_dict(value)]


def entry_kind(event: Interaction | Click) -> str:
    if isinstance(event, Click):
        return REC_CLICK
    return PURCHASE if event.action == "purchase" else VIEW


# One entry for the item side: source, offset, item_id, kind, event_time.
Entry = tuple[str, int, str, str, int]
# A COVISIT entry: the same, then the other item and the pair's count.
CovisitEntry = tuple[str, int, str, str, int, str, int]


def covisit_entries(
    source: str, offset: int, event: Interaction, pairs: Iterable[tuple[str, int]]
) -> list[CovisitEntry]:
    """The item side's COVISIT entries of one interaction's pairs: both items get each."""
    entries: list[CovisitEntry] = []
    for other, count in pairs:
        entries.append((source, offset, event.item_id, COVISIT, event.event_time, other, count))
        entries.append((source, offset, other, COVISIT, event.event_time, event.item_id, count))
    return entries


def item_entries(
    positioned: Iterable[tuple[str, int, Interaction | Click]],
    covisits: Iterable[CovisitEntry] = (),
) -> list[ItemEntries]:
    """Group ``(source, offset, event)`` (in offset order per source) and the COVISIT
    entries of the same events by item and source."""
    events: list[Entry | CovisitEntry] = [
        (source, offset, event.item_id, entry_kind(event), event.event_time)
        for source, offset, event in positioned
    ]
    return group_entries(sorted([*events, *covisits], key=lambda entry: entry[1]))


def group_entries(entries: Iterable[Entry | CovisitEntry]) -> list[ItemEntries]:
    """Group entries (in offset order per source) by item and source.

    One event may give an item several entries at its offset (the join's impression and a
    click waiting for it, an interaction's co-visitation pairs); they are in the same
    batch, so in the same message.
    """
    grouped: dict[tuple[str, str], ItemEntries] = {}
    for source, offset, item_id, kind, event_time, *payload in entries:
        key = (item_id, source)
        message = grouped.get(key)
        if message is None:
            message = grouped[key] = ItemEntries(item_id, source)
        message.entries.append([offset, kind, event_time, *payload])
    return list(grouped.values())


def fold_item_entries(state: ItemState, message: ItemEntries) -> int:
    """Fold the entries above the folded offset of their source; returns how many.

    Entries of one offset all travel in one message (``group_entries``), so comparing
    each with the offset folded before this message keeps them all, once.
    """
    folded_before = state.offsets.get(message.source, -1)
    folded_up_to = folded_before
    delta = ItemDelta(message.item_id)
    applied = 0
    for offset, kind, event_time, *payload in message.entries:
        if offset <= folded_before:
            continue
        folded_up_to = max(folded_up_to, offset)
        applied += 1
        delta.add_kind(kind, int(event_time), *payload)
    if applied:
        state.offsets[message.source] = folded_up_to
        fold_item(state, delta)
    return applied


def fold_item(state: ItemState, delta: ItemDelta) -> None:
    state.interaction_count += delta.interactions
    state.purchase_count += delta.purchases
    state.click_count += delta.rec_clicks
    state.impression_count += delta.impressions
    state.attributed_click_count += delta.attributed_clicks
    state.join_time = max(state.join_time, delta.join_time)
    merge_window(state.window, delta.window)
    if delta.covisits:
        merge_covisits(state.covisits, delta.covisits)
        state.covisit_total += sum(delta.covisits.values())
        state.covisit_time = max(state.covisit_time, delta.covisit_time)
    reference = max(state.last_event_time, delta.last_event_time)
    state.trend_score = decayed(state.trend_score, state.last_event_time, reference) + decayed(
        delta.trend, delta.last_event_time, reference
    )
    state.last_event_time = reference


def stamp(state: UserState | ItemState) -> int:
    """Give a changed state the timestamp of its next Feast row, and return it.

    Feast's online store keeps a row only if its timestamp is later than the stored one.
    Event time alone does not always move forward: an item gets deltas from batches of
    different partitions whose times interleave, and two of a user's events can share a
    millisecond. So the row time is the last event time, or one millisecond after the
    previous row's, whichever is later. An item's joined entries (impressions) and
    co-visitation pairs do not move its last event time, so its row time covers their
    ``join_time`` and ``covisit_time`` too: a row stamped
    ``s`` then holds only events at or before ``s``.
    """
    newest = state.last_event_time
    if isinstance(state, ItemState):
        newest = max(newest, state.join_time, state.covisit_time)
    state.feature_time = max(newest, state.feature_time + 1)
    return state.feature_time


def user_rows(states: Iterable[tuple[str, UserState]]) -> dict[str, list[Any]]:
    """Columns for the `user_recent_push` source (one row per user)."""
    columns: dict[str, list[Any]] = {
        name: [] for name in ("user_id", *fields.USER_RECENT, fields.ROW_TIME)
    }
    for user_id, state in states:
        row = {
            "user_id": user_id,
            "recent_items": list(state.items),
            "recent_times": list(state.times),
            "interaction_count": state.interaction_count,
            "last_event_time": state.last_event_time,
            fields.ROW_TIME: state.feature_time,
        }
        for name, values in columns.items():
            values.append(row[name])  # a KeyError here: a declared field nothing fills
    return columns


# The item_stats feature view's fields, in the order of the rows; each is an ItemState
# attribute of the same name.
ITEM_FEATURES = tuple(fields.ITEM_STATS)


def item_rows(states: Iterable[tuple[str, ItemState]]) -> dict[str, list[Any]]:
    """Columns for the `item_stats_push` source (one row per item)."""
    columns: dict[str, list[Any]] = {
        name: [] for name in ("item_id", *ITEM_FEATURES, fields.ROW_TIME)
    }
    for item_id, state in states:
        columns["item_id"].append(item_id)
        heaviest = heaviest_covisits(state.covisits)  # once for both of the row's fields
        chosen = {
            "covisit_items": [item for item, _ in heaviest],
            "covisit_weights": [count for _, count in heaviest],
        }
        for name in ITEM_FEATURES:
            columns[name].append(chosen[name] if name in chosen else getattr(state, name))
        columns[fields.ROW_TIME].append(state.feature_time)
    return columns
