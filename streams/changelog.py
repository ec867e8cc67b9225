"""Table writes: each changed state into its Faust table and its changelog topic, sent
in whole record batches and waited for before the state's row is pushed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping
from typing import Any, cast

import faust
from faust.serializers import codecs
from faust.types import TableT

from streams.batches import Delivered
from streams.faust_patches import describe_producer, kafka_producer
from streams.folding import ItemState, UserState, stamp

log = logging.getLogger(__name__)


async def write_states(
    app: faust.App,
    table: TableT,
    states: Mapping[str, UserState] | Mapping[str, ItemState],
    last_record: Mapping[str, Delivered],
) -> None:
    """Write each changed state to the table and wait until its changelog record is stored.

    One record per key, in the changelog partition of the key's own last event: the
    partition a restarted worker reads the key's events from. The wait comes before the
    states' rows are pushed: a row pushed before its state is saved
    would outlive a crash that loses the state, and the restarted worker, recovering an
    older state with older row times, could not replace that row (the store keeps the
    newer one), so the events it folds again would never show.

    The records go to the Kafka client in whole batches, one per partition (more when a
    batch fills), in the table's own key and value formats, rather than through
    ``Table.send_changelog``: its buffered send costs more than the fold of an event, its
    completion hook keeps an offset only a RocksDB store uses, and even the client's own
    per-record ``send`` (a future, a metadata check and a partitioner call for each) was
    a tenth of the worker's time. The table holds the same bytes as the changelog record.
    """
    topic = table.changelog_topic.get_topic_name()
    records = save(table, states, last_record)
    client = kafka_producer(app)
    saved = [
        delivery
        for partition, partition_records in records.items()
        for delivery in await send_in_batches(client, topic, partition, partition_records)
    ]
    await _delivered(app, saved)


def save(
    table: TableT,
    states: Mapping[str, UserState] | Mapping[str, ItemState],
    last_record: Mapping[str, Delivered],
) -> dict[int, list[tuple[bytes, bytes]]]:
    """Stamp the states, put them in the table, and return their changelog records
    (key and value bytes) by changelog partition: the partition of each key's last event.

    The table holds the value bytes themselves (its value type is bytes, see
    ``streams.agents.attach``), so a worker that recovers the table from its changelog
    holds the same.
    """
    collection = cast(Any, table)
    key_format, data = collection.key_serializer, collection.data
    if collection.value_serializer != "raw":
        raise ValueError(f"table {table.name!r} must hold bytes, not {collection.value_serializer}")
    records: dict[int, list[tuple[bytes, bytes]]] = {}
    for key, state in states.items():
        stamp(state)
        value = state.to_json()
        partition = last_record[key].message.partition
        records.setdefault(partition, []).append((codecs.dumps(key_format, key), value))
        data[key] = value
    return records


async def send_in_batches(
    client: Any, topic: str, partition: int, records: list[tuple[bytes, bytes]]
) -> list[Awaitable[Any]]:
    """Send records to one partition in as few record batches as fit; their deliveries.

    A batch is closed before it is handed over, so it leaves without the producer's
    linger. The client sends one batch of a partition at a time, as it would the
    records one by one.
    """
    deliveries: list[Awaitable[Any]] = []
    batch = client.create_batch()
    for key, value in records:
        if batch.append(key=key, value=value, timestamp=None) is None:  # full
            batch.close()
            deliveries.append(await client.send_batch(batch, topic, partition=partition))
            batch = client.create_batch()
            # An empty batch takes any record; the broker judges one too large.
            batch.append(key=key, value=value, timestamp=None)
    if batch.record_count():
        batch.close()
        deliveries.append(await client.send_batch(batch, topic, partition=partition))
    return deliveries


# A delivery slower than this is logged with the producer's state, then waited for still.
DELIVERY_WARN_SECONDS = 30.0


async def _delivered(app: faust.App, deliveries: list[Awaitable[Any]]) -> None:
    """Wait for the changelog records' deliveries; log the producer's state while it lags.

    A worker once waited here 100 s with every agent idle and the Kafka client's sender
    asleep over undelivered batches (the kill test, rarely, right after a start). The log
    line says which partitions hold batches, how old, whether muted or in flight, and
    their leaders, so the next occurrence shows where the client stands.
    """
    waiting = asyncio.gather(*deliveries)
    while True:
        try:
            await asyncio.wait_for(asyncio.shield(waiting), DELIVERY_WARN_SECONDS)
            return
        except TimeoutError:
            log.warning(
                "changelog records undelivered after %.0f s: %s",
                DELIVERY_WARN_SECONDS,
                describe_producer(app),
            )
