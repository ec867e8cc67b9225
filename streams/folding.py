"""Folding events into feature state: plain functions, testable without a broker.

The Faust agents (streams/agents.py) call these on each batch; the state objects are
what the Faust tables hold, and ``*_row`` turns them into the rows pushed to Feast.

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
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from streams.events import Click, Interaction

# An item's trend score is an exponentially decayed count of its interactions: each
# interaction adds 1, and the sum halves every TREND_HALF_LIFE_MS of event time. It is
# stored as of the item's last_event_time; a reader decays it to its own "now". The sum is
# order-independent, so late events and batches from interleaved partitions fold to the
# same value (up to float rounding) whatever order they arrive in.
TREND_HALF_LIFE_MS = 7 * 24 * 3600 * 1000


def source_key(topic: str, partition: int) -> str:
    """Names one partition of the log in a state's ``offsets``."""
    return f"{topic}:{partition}"


class Fold(enum.Enum):
    """What folding one positioned event did."""

    NEW = "new"  # folded now
    REDELIVERED = "redelivered"  # at or below the partition's folded offset: already in
    DUPLICATE = "duplicate"  # a new offset but an event_id already kept: a repeated send


def decayed(
    score: float, from_ms: int, to_ms: int, half_life_ms: int = TREND_HALF_LIFE_MS
) -> float:
    """``score`` as of ``from_ms`` seen from ``to_ms`` (grows when ``to_ms`` is earlier)."""
    return score * 2.0 ** (-(to_ms - from_ms) / half_life_ms)


@dataclass
class UserState:
    """A user's most recent interactions, newest first, plus counts.

    ``event_ids`` remembers the ids of the kept items so that a redelivered event (the
    worker restarted before committing its offset) is not folded twice.
    """

    items: list[str] = field(default_factory=list)
    times: list[int] = field(default_factory=list)  # epoch ms, descending, parallel to items
    event_ids: list[str] = field(default_factory=list)
    interaction_count: int = 0
    last_event_time: int = 0
    feature_time: int = 0  # timestamp of the last row pushed to Feast; see ``stamp``
    offsets: dict[str, int] = field(default_factory=dict)  # highest folded, per partition

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature_time": self.feature_time,
            "items": self.items,
            "times": self.times,
            "event_ids": self.event_ids,
            "interaction_count": self.interaction_count,
            "last_event_time": self.last_event_time,
            "offsets": self.offsets,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> UserState:
        if not data:
            return cls()
        return cls(
            items=list(data["items"]),
            times=list(data["times"]),
            event_ids=list(data["event_ids"]),
            interaction_count=int(data["interaction_count"]),
            last_event_time=int(data["last_event_time"]),
            feature_time=int(data.get("feature_time", 0)),
            offsets=dict(data.get("offsets", {})),
        )


def fold_interaction(state: UserState, event: Interaction, keep: int) -> bool:
    """Add one interaction to the user's recent items; False when it was already folded.

    Events are placed by event time, not arrival order, so a late event lands where it
    belongs (or falls off the end when it is older than everything kept).
    """
    if event.event_id in state.event_ids:
        return False
    state.interaction_count += 1
    state.last_event_time = max(state.last_event_time, event.event_time)
    # times are descending; find the slot among equal-or-newer times (stable for ties).
    negated = [-t for t in state.times]
    slot = bisect.bisect_right(negated, -event.event_time)
    if slot >= keep:
        return True
    state.items.insert(slot, event.item_id)
    state.times.insert(slot, event.event_time)
    state.event_ids.insert(slot, event.event_id)
    del state.items[keep:], state.times[keep:], state.event_ids[keep:]
    return True


def fold_interaction_at(
    state: UserState, event: Interaction, keep: int, source: str, offset: int
) -> Fold:
    """``fold_interaction`` for an event read at ``offset`` of partition ``source``."""
    if offset <= state.offsets.get(source, -1):
        return Fold.REDELIVERED
    state.offsets[source] = offset
    return Fold.NEW if fold_interaction(state, event, keep) else Fold.DUPLICATE


@dataclass
class ItemState:
    interaction_count: int = 0
    click_count: int = 0  # clicks on served recommendations (the clicks topic)
    purchase_count: int = 0
    last_event_time: int = 0
    trend_score: float = 0.0  # decayed interaction count as of last_event_time
    feature_time: int = 0  # timestamp of the last row pushed to Feast; see ``stamp``
    offsets: dict[str, int] = field(default_factory=dict)  # highest folded, per partition

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature_time": self.feature_time,
            "interaction_count": self.interaction_count,
            "click_count": self.click_count,
            "purchase_count": self.purchase_count,
            "last_event_time": self.last_event_time,
            "trend_score": self.trend_score,
            "offsets": self.offsets,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ItemState:
        if not data:
            return cls()
        return cls(**{**data, "offsets": dict(data.get("offsets", {}))})


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

    def add(self, event: Interaction | Click) -> None:
        self.add_kind(entry_kind(event), event.event_time)

    def add_kind(self, kind: str, event_time: int) -> None:
        """Add one event of ``kind`` (VIEW, PURCHASE or REC_CLICK) at ``event_time``."""
        if kind == REC_CLICK:
            self.rec_clicks += 1
        else:
            self.interactions += 1
            if kind == PURCHASE:
                self.purchases += 1
            self._add_trend(1.0, event_time)
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
        )


def item_deltas(events: Iterable[Interaction | Click]) -> dict[str, ItemDelta]:
    deltas: dict[str, ItemDelta] = {}
    for event in events:
        deltas.setdefault(event.item_id, ItemDelta(event.item_id)).add(event)
    return deltas


# Kinds of entry in an ItemEntries message.
VIEW, PURCHASE, REC_CLICK = "v", "p", "c"  # VIEW: any interaction that is not a purchase


@dataclass
class ItemEntries:
    """What one batch adds to one item from one partition of the log, event by event.

    The item side folds only the entries above its folded offset for ``source``, so a
    message sent again after a crash, or cut differently, adds nothing twice. One message
    per item and partition per batch; an entry is ``[offset, kind, event_time]``.
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


def item_entries(positioned: Iterable[tuple[str, int, Interaction | Click]]) -> list[ItemEntries]:
    """Group ``(source, offset, event)`` (in offset order per source) by item and source."""
    grouped: dict[tuple[str, str], ItemEntries] = {}
    for source, offset, event in positioned:
        key = (event.item_id, source)
        message = grouped.get(key)
        if message is None:
            message = grouped[key] = ItemEntries(event.item_id, source)
        message.entries.append([offset, entry_kind(event), event.event_time])
    return list(grouped.values())


def fold_item_entries(state: ItemState, message: ItemEntries) -> int:
    """Fold the entries above the folded offset of their source; returns how many."""
    folded_up_to = state.offsets.get(message.source, -1)
    delta = ItemDelta(message.item_id)
    applied = 0
    for offset, kind, event_time in message.entries:
        if offset <= folded_up_to:
            continue
        folded_up_to = offset
        applied += 1
        delta.add_kind(kind, int(event_time))
    if applied:
        state.offsets[message.source] = folded_up_to
        fold_item(state, delta)
    return applied


def fold_item(state: ItemState, delta: ItemDelta) -> None:
    state.interaction_count += delta.interactions
    state.purchase_count += delta.purchases
    state.click_count += delta.rec_clicks
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
    previous row's, whichever is later.
    """
    state.feature_time = max(state.last_event_time, state.feature_time + 1)
    return state.feature_time


def user_rows(states: Iterable[tuple[str, UserState]]) -> dict[str, list[Any]]:
    """Columns for the `user_recent_push` source (one row per user)."""
    columns: dict[str, list[Any]] = {
        "user_id": [],
        "recent_items": [],
        "recent_times": [],
        "interaction_count": [],
        "last_event_time": [],
        "event_timestamp": [],
    }
    for user_id, state in states:
        columns["user_id"].append(user_id)
        columns["recent_items"].append(list(state.items))
        columns["recent_times"].append(list(state.times))
        columns["interaction_count"].append(state.interaction_count)
        columns["last_event_time"].append(state.last_event_time)
        columns["event_timestamp"].append(state.feature_time)
    return columns


def item_rows(states: Iterable[tuple[str, ItemState]]) -> dict[str, list[Any]]:
    """Columns for the `item_stats_push` source (one row per item)."""
    columns: dict[str, list[Any]] = {
        "item_id": [],
        "interaction_count": [],
        "click_count": [],
        "purchase_count": [],
        "last_event_time": [],
        "trend_score": [],
        "event_timestamp": [],
    }
    for item_id, state in states:
        columns["item_id"].append(item_id)
        for name in (
            "interaction_count",
            "click_count",
            "purchase_count",
            "last_event_time",
            "trend_score",
        ):
            columns[name].append(getattr(state, name))
        columns["event_timestamp"].append(state.feature_time)
    return columns
