"""What the agents do with one batch, as plain functions: no Faust, no broker, no I/O.

Each takes the batch's records (anything with a ``message`` carrying ``topic``,
``partition`` and ``offset``, as a Faust event has) and the stored states, folds them with
``streams.folding``, and returns what the agent then writes: the changed states, the
states to push again, the entries for the item side, and counts for the metrics.

Every fold is idempotent by log position (see ``streams.folding``): the user state
remembers the offset it folded up to, and the item entries carry the offsets of the
events they add, so redelivery after a crash changes no feature.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from aiokafka.partitioner import murmur2

from streams.events import Click, Event, Interaction, RecommendationServed
from streams.folding import (
    CovisitEntry,
    Fold,
    ItemEntries,
    ItemState,
    UserState,
    covisit_entries,
    covisit_pairs,
    entries_of,
    fold_interaction_at,
    fold_item_entries,
    item_entries,
    source_key,
)


class Position(Protocol):
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...


class Delivered(Protocol):
    """A record as a stream delivers it (a Faust event): its position, and its value."""

    @property
    def message(self) -> Position: ...
    @property
    def value(self) -> Any: ...


R = TypeVar("R", bound=Delivered)
S = TypeVar("S", UserState, ItemState)
Positioned = tuple[str, int, Interaction | Click]  # (source, offset, event) for the item side


def once(records: Sequence[R]) -> tuple[list[R], Counter[str]]:
    """``records`` without a second delivery of the same (topic, partition, offset), and
    the count of those dropped per topic.

    At the end of recovery the stream partitions are sought back to their committed
    offsets (``streams.faust_patches._seek_with_flow_stopped``), and records read before
    the seek come again, possibly into the batch that already holds them. Every fold is
    idempotent across batches, but a record met twice in one batch would put its item
    entries twice into one message, and the item side keeps every entry of an offset it
    has not folded (``fold_item_entries``): it would count the event twice (the kill test
    saw it).
    """
    seen: set[tuple[str, int, int]] = set()
    distinct: list[R] = []
    repeats: Counter[str] = Counter()
    for record in records:
        message = record.message
        position = (message.topic, message.partition, message.offset)
        if position in seen:
            repeats[message.topic] += 1
            continue
        seen.add(position)
        distinct.append(record)
    return distinct, repeats


@dataclass
class Folded(Generic[S, R]):
    """States a batch changed, with the record each was last changed by (its changelog
    partition), and states that met only redelivered records."""

    changed: dict[str, S] = field(default_factory=dict)
    last_record: dict[str, R] = field(default_factory=dict)
    redelivered: dict[str, S] = field(default_factory=dict)
    redelivered_count: int = 0  # records (user side) or entries (item side) met again

    def state(self, key: str, stored: Callable[[str], bytes | None], kind: type[S]) -> S:
        """The key's state as this batch has it so far."""
        return self.changed.get(key) or kind.from_json(stored(key))

    def to_push(self) -> list[tuple[str, S]]:
        """The changed states, and the states that met only redelivered records.

        A worker killed after its table write reached the changelog but before its Feast
        push leaves a state whose row never arrived; its restart meets those records as
        redelivered and changes nothing, so only pushing the state again brings the row.
        The state keeps its row time, and the store keeps a row only if it is newer: a row
        that did arrive is left as it is.
        """
        rows: list[tuple[str, S]] = list(self.changed.items())
        rows += [(key, s) for key, s in self.redelivered.items() if key not in self.changed]
        return rows


@dataclass
class UserBatch(Generic[R]):
    folded: Folded[UserState, R]
    for_items: list[Positioned]  # the events whose entries go to the item side
    covisits: list[CovisitEntry]  # their co-visitation pairs, for the item side too
    seen: dict[str, set[str]]  # items each user interacted with, for the seen-item sets
    new: int  # events folded now
    duplicates: int  # repeated sends recognised by event_id


def fold_user_batch(
    decoded: Iterable[tuple[R, Event]], stored: Callable[[str], bytes | None], keep: int
) -> UserBatch[R]:
    """Fold a batch of decoded interactions into the users' recent items."""
    folded: Folded[UserState, R] = Folded()
    batch = UserBatch(folded=folded, for_items=[], covisits=[], seen={}, new=0, duplicates=0)
    for record, interaction in decoded:
        if not isinstance(interaction, Interaction):
            continue
        message = record.message
        source = source_key(message.topic, message.partition)
        user_id = interaction.user_id
        # Idempotent, so even a duplicate or redelivered event is (re)recorded.
        batch.seen.setdefault(user_id, set()).add(interaction.item_id)
        state = folded.state(user_id, stored, UserState)
        fold = fold_interaction_at(state, interaction, keep, source, message.offset)
        if fold is Fold.DUPLICATE:
            # Saved like a change: the state now knows where the repeat was, which a
            # redelivery of it has to find (and a later read of the user's state in this
            # batch would otherwise not see).
            batch.duplicates += 1
            folded.changed[user_id] = state
            folded.last_record[user_id] = record
            continue
        if fold is not Fold.REDELIVERED_DUPLICATE:
            # A redelivered event goes to the item side again: its entry may never have
            # arrived there, and the item side skips it if it did. A repeat's never went:
            # the item side would count it as new.
            batch.for_items.append((source, message.offset, interaction))
            # The pairs read the state the event is folded into; a redelivered event's
            # are the same as the first time, even when the recovered state holds later
            # events (``covisit_pairs``), and the item side skips them if they arrived then.
            pairs = covisit_pairs(state, interaction, position=message.offset)
            batch.covisits += covisit_entries(source, message.offset, interaction, pairs)
        if fold is Fold.NEW:
            batch.new += 1
            folded.changed[user_id] = state
            folded.last_record[user_id] = record
        else:
            folded.redelivered_count += 1
            folded.redelivered[user_id] = state
    return batch


def split_clicks(
    decoded: Iterable[tuple[R, Event]],
) -> tuple[list[Positioned], list[tuple[R, RecommendationServed | Click]]]:
    """Clicks and served recommendations: the clicks for the item side (REC_CLICK
    entries), and both for the impression-click join (``streams.joins``)."""
    for_items: list[Positioned] = []
    to_join: list[tuple[R, RecommendationServed | Click]] = []
    for record, event in decoded:
        if isinstance(event, Click):
            message = record.message
            for_items.append((source_key(message.topic, message.partition), message.offset, event))
        if isinstance(event, Click | RecommendationServed):
            to_join.append((record, event))
    return for_items, to_join


def fold_item_batch(
    records: Iterable[R], stored: Callable[[str], bytes | None]
) -> Folded[ItemState, R]:
    """Fold a batch of item-activity messages (each a list of ``ItemEntries``) into the
    items' running counts."""
    folded: Folded[ItemState, R] = Folded()
    for record in records:
        for message in entries_of(record.value):
            item_id = message.item_id
            state = folded.state(item_id, stored, ItemState)
            total = len(message.entries)
            applied = fold_item_entries(state, message)
            if applied < total:
                folded.redelivered_count += total - applied
                folded.redelivered[item_id] = state
            if applied:
                folded.changed[item_id] = state
                folded.last_record[item_id] = record
    return folded


def item_partition(item_id: str, partitions: int) -> int:
    """The item-activity partition of an item: Kafka's default partitioner on its id.

    The same partition the producer chose when the id was the message key, so item state
    already in the table changelogs stays with the partition that folds the item.
    """
    return (murmur2(item_id.encode()) & 0x7FFFFFFF) % partitions


def by_item_partition(
    positioned: list[Positioned],
    joined: list[ItemEntries],
    partitions: int,
    covisits: Sequence[CovisitEntry] = (),
) -> dict[int, list[dict[str, Any]]]:
    """The item-side messages of a batch, one per destination partition, not per item: a
    batch touches hundreds of items, and each message costs the event loop a produce and
    a decode. ``covisits`` are the pairs of ``positioned``'s interactions: an item's
    entries of one source travel in one message."""
    grouped: dict[int, list[dict[str, Any]]] = {}
    for message in [*item_entries(positioned, covisits), *joined]:
        destination = item_partition(message.item_id, partitions)
        grouped.setdefault(destination, []).append(message.to_dict())
    return grouped
