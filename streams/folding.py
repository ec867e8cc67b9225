"""Folding events into feature state: plain functions, testable without a broker.

The Faust agents (streams/agents.py) call these on each batch; the state objects are
what the Faust tables hold, and ``*_row`` turns them into the rows pushed to Feast.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from streams.events import Click, Interaction


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "items": self.items, "times": self.times, "event_ids": self.event_ids,
            "interaction_count": self.interaction_count, "last_event_time": self.last_event_time,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> UserState:
        if not data:
            return cls()
        return cls(
            items=list(data["items"]), times=list(data["times"]),
            event_ids=list(data["event_ids"]), interaction_count=int(data["interaction_count"]),
            last_event_time=int(data["last_event_time"]),
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


@dataclass
class ItemState:
    interaction_count: int = 0
    click_count: int = 0  # clicks on served recommendations (the clicks topic)
    purchase_count: int = 0
    last_event_time: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "interaction_count": self.interaction_count, "click_count": self.click_count,
            "purchase_count": self.purchase_count, "last_event_time": self.last_event_time,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ItemState:
        return cls(**data) if data else cls()


@dataclass(frozen=True)
class ItemActivity:
    """What the item side needs of an event, re-keyed by item_id on the activity topic."""

    item_id: str
    kind: str  # an Interaction action, or "rec_click" for a Click
    event_time: int

    def to_dict(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "kind": self.kind, "event_time": self.event_time}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ItemActivity:
        return cls(str(data["item_id"]), str(data["kind"]), int(data["event_time"]))

    @classmethod
    def of(cls, event: Interaction | Click) -> ItemActivity:
        kind = event.action if isinstance(event, Interaction) else "rec_click"
        return cls(event.item_id, kind, event.event_time)


def fold_item(state: ItemState, activity: ItemActivity) -> None:
    if activity.kind == "rec_click":
        state.click_count += 1
    else:
        state.interaction_count += 1
        if activity.kind == "purchase":
            state.purchase_count += 1
    state.last_event_time = max(state.last_event_time, activity.event_time)


def user_rows(states: Iterable[tuple[str, UserState]]) -> dict[str, list[Any]]:
    """Columns for the `user_recent_push` source (one row per user)."""
    columns: dict[str, list[Any]] = {
        "user_id": [], "recent_items": [], "recent_times": [], "interaction_count": [],
        "last_event_time": [], "event_timestamp": [],
    }
    for user_id, state in states:
        columns["user_id"].append(user_id)
        columns["recent_items"].append(list(state.items))
        columns["recent_times"].append(list(state.times))
        columns["interaction_count"].append(state.interaction_count)
        columns["last_event_time"].append(state.last_event_time)
        columns["event_timestamp"].append(state.last_event_time)
    return columns


def item_rows(states: Iterable[tuple[str, ItemState]]) -> dict[str, list[Any]]:
    """Columns for the `item_stats_push` source (one row per item)."""
    columns: dict[str, list[Any]] = {
        "item_id": [], "interaction_count": [], "click_count": [], "purchase_count": [],
        "last_event_time": [], "event_timestamp": [],
    }
    for item_id, state in states:
        columns["item_id"].append(item_id)
        for name, value in state.to_dict().items():
            columns[name].append(value)
        columns["event_timestamp"].append(state.last_event_time)
    return columns
