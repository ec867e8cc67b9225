"""Table writes: changelog records in whole batches, recoverable as the table held them."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from streamrec.settings import Settings
from streams.agents import attach
from streams.app import create_app
from streams.changelog import save, send_in_batches
from streams.events import Interaction
from streams.folding import ItemState, UserState, fold_interaction
from streams.sinks import InMemoryChangeNotifier, InMemoryFeatureSink


def _event(topic: str, partition: int, offset: int) -> Any:
    return SimpleNamespace(message=SimpleNamespace(topic=topic, partition=partition, offset=offset))


class _BatchingClient:
    """The batch half of the Kafka client's producer, with real record batches."""

    def __init__(self, batch_bytes: int) -> None:
        self.batch_bytes = batch_bytes
        self.sent: list[tuple[str, int, list[bytes], bool]] = []

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_bytes, compression_type=0, is_transactional=False)

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> str:
        records = DefaultRecordBatch(bytearray(batch._build()))
        values = [bytes(record.value) for record in records]
        self.sent.append((topic, partition, values, batch.closed()))
        return f"delivery {len(self.sent)}"


def test_records_go_out_in_whole_closed_batches_in_order() -> None:
    client = _BatchingClient(batch_bytes=1_000)
    records = [(f"u{n}".encode(), bytes([n]) * 300) for n in range(7)]
    deliveries = asyncio.run(send_in_batches(client, "changelog", 2, records))

    assert len(client.sent) > 1  # 2,100 bytes do not fit one 1,000-byte batch
    assert deliveries == [f"delivery {n + 1}" for n in range(len(client.sent))]
    assert [value for _, _, values, _ in client.sent for value in values] == [
        value for _, value in records
    ]
    assert all(topic == "changelog" and partition == 2 for topic, partition, _, _ in client.sent)
    assert all(closed for *_, closed in client.sent)  # no linger: sent at once


def test_a_record_larger_than_a_batch_goes_alone() -> None:
    client = _BatchingClient(batch_bytes=1_000)
    records = [(b"a", b"x" * 100), (b"b", b"y" * 5_000), (b"c", b"z" * 100)]
    asyncio.run(send_in_batches(client, "changelog", 0, records))
    assert [values for _, _, values, _ in client.sent] == [
        [b"x" * 100],
        [b"y" * 5_000],
        [b"z" * 100],
    ]


def test_saved_states_recover_from_their_changelog_records_as_the_table_held_them() -> None:
    """A restarted worker reads each state back from its changelog record through the
    changelog topic's own decoding: it must get the key and the very bytes the table held."""
    settings = Settings(topic_prefix="save-test.")
    app = create_app(settings)
    attach(app, settings, InMemoryFeatureSink(), InMemoryChangeNotifier())
    user = UserState()
    viewed = Interaction(user_id="ü 1", item_id="i", action="view", event_time=1_700_000_000_000)
    fold_interaction(user, viewed, 5)
    for name, key, state in (("user_recent", "ü 1", user), ("item_stats", "i", ItemState())):
        table: Any = app.tables[name]
        records = save(table, cast(Any, {key: state}), {key: _event("t", 2, 40)})
        assert list(records) == [2]  # the partition of the key's last event
        [(key_bytes, value_bytes)] = records[2]
        held = table.data[key]
        assert held == value_bytes and type(state).from_json(held) == state
        message = SimpleNamespace(key=key_bytes, value=value_bytes, headers=[])
        recovered = asyncio.run(table.changelog_topic.schema.decode(app, cast(Any, message)))
        assert (recovered.key, recovered.value) == (key, held)
