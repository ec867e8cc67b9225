"""The worker's item side under served lists: CPU per list with the item states kept
decoded between batches (``streams.batches.DecodedStates``) and without, in one run.

    .venv/bin/python bench/item_side.py [--source movielens-100k] [--lists 40000]
        [--per-batch 20] [--repeats 3]

No services. The item states are those of the log (``--source``, a prepared dataset)
folded through the worker's batch functions, as ``bench/covisit_state.py`` does: each
popular item holds its co-visitation counts. Then ``--lists`` served lists of ten items
(drawn in proportion to the items' interaction counts, as the popularity-led lists of
the served cascade mostly are) arrive in batches of ``--per-batch`` lists (400 lists/s
in the worker's 50-ms batches): each list an impression entry per item, grouped into
item-side messages per partition, then the item side's batch: fold the entries into
the states (``fold_item_batch``), stamp, encode and store them
(``streams.changelog.save``, into a dict standing in for the table) and build their rows
(``item_rows``). The two ways alternate ``--repeats`` times over copies of the same
stored bytes; printed: CPU-ms per list (process time) and the ratio of the medians, and
that the bytes stored at the end are the same both ways.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pandas as pd

from streamrec.paths import dataset_events
from streamrec.settings import load_settings
from streams.batches import (
    DecodedStates,
    by_item_partition,
    fold_item_batch,
    fold_user_batch,
)
from streams.changelog import save
from streams.events import Interaction
from streams.folding import IMPRESSION, ItemState, group_entries, item_rows

ITEM_PARTITIONS = 3
KEPT = 2048  # streams.agents.ITEM_STATES_KEPT


def record(topic: str, partition: int, offset: int, value: Any = None) -> Any:
    return SimpleNamespace(
        message=SimpleNamespace(topic=topic, partition=partition, offset=offset), value=value
    )


def fold_log(events: pd.DataFrame, batch: int, keep: int) -> Iterator[list[Any]]:
    """Fold ``events`` (interactions, in event-time order) through the worker's user
    batch function in batches of ``batch``; yields each batch's item-side records (the
    caller folds them into its item table)."""
    users: dict[str, bytes] = {}
    rows = events[["event_id", "user_id", "item_id", "event_time"]].itertuples(index=False)
    decoded = []
    for offset, (event_id, user_id, item_id, event_time) in enumerate(rows):
        event = Interaction(
            event_id=str(event_id),
            user_id=str(user_id),
            item_id=str(item_id),
            action="rate",
            event_time=int(event_time),
        )
        decoded.append((record("interactions", 0, offset), event))
        if len(decoded) < batch and offset < len(events) - 1:
            continue
        folded = fold_user_batch(decoded, users.get, keep=keep)
        decoded = []
        for user, state in folded.folded.changed.items():
            users[user] = state.to_json()
        grouped = by_item_partition(folded.for_items, [], ITEM_PARTITIONS, folded.covisits)
        yield [record("activity", p, 0, {"items": m}) for p, m in grouped.items()]


class Table(SimpleNamespace):
    """What ``streams.changelog.save`` needs of a Faust table: its data and formats."""

    def __init__(self, data: dict[str, bytes]) -> None:
        super().__init__(data=data, key_serializer="json", value_serializer="raw")


def served_batches(
    items: dict[str, bytes], lists: int, per_batch: int, seed: int = 0
) -> list[list[Any]]:
    """Item-side records of ``lists`` served lists, ``per_batch`` lists per batch."""
    ids = sorted(items)
    weights = [ItemState.from_json(items[i]).interaction_count for i in ids]
    rng = random.Random(seed)
    batches = []
    for start in range(0, lists, per_batch):
        entries = []
        for n in range(start, min(lists, start + per_batch)):
            chosen = dict.fromkeys(rng.choices(ids, weights, k=20))
            entries += [("recs:0", n, item, IMPRESSION, 1_000 + n) for item in list(chosen)[:10]]
        grouped: dict[int, list[dict[str, Any]]] = {}
        for message in group_entries(entries):
            partition = hash(message.item_id) % ITEM_PARTITIONS
            grouped.setdefault(partition, []).append(message.to_dict())
        batches.append([record("activity", p, start, {"items": m}) for p, m in grouped.items()])
    return batches


def run(stored: dict[str, bytes], batches: list[list[Any]], keep_decoded: bool) -> float:
    """Fold ``batches`` into ``stored`` (changed in place); process seconds."""
    table: Any = Table(stored)
    decoded = DecodedStates(ItemState, KEPT) if keep_decoded else None
    started = time.process_time()
    for records in batches:
        folded = fold_item_batch(records, stored.get, decoded)
        save(table, folded.changed, {key: records[0] for key in folded.changed}, decoded)
        item_rows(folded.to_push())
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="movielens-100k", help="a prepared log")
    parser.add_argument("--lists", type=int, default=40_000)
    parser.add_argument("--per-batch", type=int, default=20, help="lists per worker batch")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    settings = load_settings()
    events = pd.read_parquet(dataset_events(settings.data_dir, args.source))
    events = events.sort_values("event_time", kind="stable")
    items: dict[str, bytes] = {}
    for records in fold_log(events, 1000, settings.recent_items_max):
        changed = fold_item_batch(records, items.get).changed
        items.update({item: state.to_json() for item, state in changed.items()})
    batches = served_batches(items, args.lists, args.per_batch)
    largest = max(len(ItemState.from_json(v).covisits) for v in items.values())
    print(
        f"{args.source}: {len(items):,} items (at most {largest:,} neighbours), "
        f"{args.lists:,} lists in batches of {args.per_batch}"
    )
    results: dict[bool, list[float]] = {False: [], True: []}
    ends: dict[bool, dict[str, bytes]] = {}
    for _ in range(args.repeats):
        for keep_decoded in (False, True):
            stored = dict(items)
            seconds = run(stored, batches, keep_decoded)
            results[keep_decoded].append(1000 * seconds / args.lists)
            ends[keep_decoded] = stored
    for keep_decoded, label in ((False, "decoded every batch"), (True, "kept decoded")):
        runs = results[keep_decoded]
        print(
            f"{label:>20}: CPU-ms per list median {statistics.median(runs):.4f} "
            f"(runs {', '.join(f'{r:.4f}' for r in runs)})"
        )
    ratio = statistics.median(results[False]) / statistics.median(results[True])
    print(f"ratio of medians: {ratio:.2f}")
    same = ends[False] == ends[True]
    print(f"stored bytes the same both ways: {same}")
    if not same:
        raise SystemExit("the two ways stored different states")


if __name__ == "__main__":
    main()
