"""The item state's size with every co-visitation count kept, and its changelog write.

    .venv/bin/python bench/covisit_state.py [--source movielens-100k] [--batch 1000]

No services: it folds a prepared log through the worker's own batch functions
(``streams.batches``: user batches, item-side messages to 3 item partitions, item
batches, states kept as the bytes the tables hold) in batches of ``--batch`` events, as
the worker does. It prints the distinct neighbours per item at the end, the largest item
state, and per batch the bytes of the changed item states (one changelog record each,
``streams.changelog.write_states``), the time to decode, fold and encode them, the time
to decode and encode them alone and to build their rows (``item_rows``, where the top
``COVISIT_KEEP`` are chosen); beside the bytes and the last two times, the same states
with their neighbours cut to the ``COVISIT_KEEP`` heaviest (what a bounded state would
hold: the order-dependent design it replaced), measured in the same run, and the ratios
of the medians.
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace
from typing import Any

import orjson
import pandas as pd

from bench.stats import summary
from streamrec.paths import dataset_events
from streamrec.settings import load_settings
from streams.batches import by_item_partition, fold_item_batch, fold_user_batch
from streams.events import Interaction
from streams.folding import COVISIT_KEEP, ItemState, heaviest_covisits, item_rows

ITEM_PARTITIONS = 3


def _record(topic: str, partition: int, offset: int, value: Any = None) -> Any:
    return SimpleNamespace(
        message=SimpleNamespace(topic=topic, partition=partition, offset=offset), value=value
    )


def _bounded(state: ItemState) -> bytes:
    """The state as a bounded top-``COVISIT_KEEP`` design would write it."""
    data = state.to_dict()
    data["covisits"] = dict(heaviest_covisits(state.covisits, COVISIT_KEEP))
    return orjson.dumps(data)


def _rows_ms(values: list[bytes]) -> float:
    """Build the rows the worker pushes for the states of ``values``, in ms."""
    states = [(str(n), ItemState.from_json(value)) for n, value in enumerate(values)]
    started = time.perf_counter()
    item_rows(states)
    return 1000 * (time.perf_counter() - started)


def _codec_ms(values: list[bytes]) -> float:
    """Decode and encode ``values`` as the item table does each batch, in ms."""
    started = time.perf_counter()
    for value in values:
        ItemState.from_json(value).to_json()
    return 1000 * (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="movielens-100k", help="a prepared log")
    parser.add_argument("--batch", type=int, default=1000, help="events per worker batch")
    args = parser.parse_args()
    settings = load_settings()
    events = pd.read_parquet(dataset_events(settings.data_dir, args.source))
    events = events.sort_values("event_time", kind="stable")
    users: dict[str, bytes] = {}
    items: dict[str, bytes] = {}
    written: list[float] = []  # KiB of changed item states per batch
    written_bounded: list[float] = []
    fold_ms: list[float] = []  # decode + fold + encode of the item side per batch
    codec_ms: list[float] = []  # decode + encode alone, every count and bounded
    codec_bounded_ms: list[float] = []
    rows_ms: list[float] = []  # the rows pushed, every count and bounded
    rows_bounded_ms: list[float] = []
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
        decoded.append((_record("interactions", 0, offset), event))
        if len(decoded) < args.batch and offset < len(events) - 1:
            continue
        batch = fold_user_batch(decoded, users.get, keep=settings.recent_items_max)
        decoded = []
        for user, state in batch.folded.changed.items():
            users[user] = state.to_json()
        grouped = by_item_partition(batch.for_items, [], ITEM_PARTITIONS, batch.covisits)
        started = time.perf_counter()
        records = [_record("activity", p, 0, {"items": m}) for p, m in grouped.items()]
        changed = fold_item_batch(records, items.get).changed
        encoded = {item: state.to_json() for item, state in changed.items()}
        fold_ms.append(1000 * (time.perf_counter() - started))
        items.update(encoded)
        bounded = [_bounded(state) for state in changed.values()]
        written.append(sum(map(len, encoded.values())) / 1024)
        written_bounded.append(sum(map(len, bounded)) / 1024)
        codec_ms.append(_codec_ms(list(encoded.values())))
        codec_bounded_ms.append(_codec_ms(bounded))
        rows_ms.append(_rows_ms(list(encoded.values())))
        rows_bounded_ms.append(_rows_ms(bounded))

    states = {item: ItemState.from_json(value) for item, value in items.items()}
    neighbours = [len(state.covisits) for state in states.values()]
    largest = max(items.values(), key=len)
    print(f"{args.source}: {len(events):,} events, {len(items):,} items, batches of {args.batch}")
    print(summary("distinct neighbours per item", neighbours, "items"))
    print(f"pairs kept: {sum(neighbours):,} (bounded: at most {COVISIT_KEEP} per item)")
    print(f"largest item state: {len(largest) / 1024:,.1f} KiB")
    print(summary("changelog write per batch, every count", written, "KiB"))
    print(summary(f"changelog write per batch, top {COVISIT_KEEP}", written_bounded, "KiB"))
    print(
        f"ratio of medians: {statistics.median(written) / statistics.median(written_bounded):.2f}"
    )
    print(summary("item side's decode, fold and encode per batch", fold_ms, "ms"))
    print(summary("decode and encode per batch, every count", codec_ms, "ms"))
    print(summary(f"decode and encode per batch, top {COVISIT_KEEP}", codec_bounded_ms, "ms"))
    print(
        f"ratio of medians: {statistics.median(codec_ms) / statistics.median(codec_bounded_ms):.2f}"
    )
    print(summary("rows per batch, every count", rows_ms, "ms"))
    print(summary(f"rows per batch, top {COVISIT_KEEP}", rows_bounded_ms, "ms"))
    print(
        f"ratio of medians: {statistics.median(rows_ms) / statistics.median(rows_bounded_ms):.2f}"
    )


if __name__ == "__main__":
    main()
