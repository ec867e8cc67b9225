"""The patches of Faust's internals (``streams.faust_patches``): what they rely on in
the pinned Faust and aiokafka, and what they do.

The first tests fail on an upgrade that moves anything a patch or a private read uses;
the rest show each patch's behaviour on a real app's consumer."""

from __future__ import annotations

import ast
import asyncio
import inspect
from importlib.metadata import version
from pathlib import Path
from typing import Any, cast

import faust
import pytest
from aiokafka import AIOKafkaProducer
from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer
from faust.types import TP
from mode.services import Service

from streamrec.settings import Settings
from streams import faust_patches
from streams.app import create_app

# The versions streams/faust_patches.py was read against. On an upgrade: read the upstream
# issues named there, drop the patches the new version makes unneeded, check the rest
# against its source, then change these and the pins in pyproject.toml.
TESTED = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0"}


def test_the_patched_libraries_are_the_versions_the_patches_were_read_against() -> None:
    installed = {name: version(name) for name in TESTED}
    assert installed == TESTED, (
        f"Faust or aiokafka changed ({installed}, patches read against {TESTED}): "
        "re-verify streams/faust_patches.py before changing TESTED"
    )


def _parameters(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)  # type: ignore[arg-type]


def test_the_replaced_methods_keep_the_signatures_the_patches_take() -> None:
    assert _parameters(Consumer._add_gap) == ["self", "tp", "offset_from", "offset_to"]
    assert _parameters(Consumer.perform_seek) == ["self"]
    assert _parameters(Service.wait_first) == ["self", "coros", "timeout"]
    assert inspect.iscoroutinefunction(Consumer._add_gap)
    assert inspect.iscoroutinefunction(Consumer.perform_seek)


def test_faust_still_calls_the_replaced_methods_where_the_patches_expect() -> None:
    fetch_loop = inspect.getsource(Consumer._drain_messages)
    # The handover the in-place patch recognises, and the gap it must never record.
    assert "self.wait_first(\n" in fetch_loop or "self.wait_first(" in fetch_loop
    assert "callback(message), self.suspend_flow.wait()" in fetch_loop
    assert "await self._add_gap(tp, r_offset + 1, offset)" in fetch_loop
    # Recovery's seek to the committed offsets, after the partitions resumed (#216, #221).
    completed = inspect.getsource(Recovery.on_recovery_completed)
    assert completed.index("consumer.resume_partitions(") < completed.index(
        "consumer.perform_seek()"
    )


def test_the_private_names_read_exist(tmp_path: Path) -> None:
    app = create_app(Settings(state_dir=tmp_path, topic_prefix="t."))
    consumer: Any = app.consumer
    for name in (
        "_committed_offset",
        "_read_offset",
        "_acked",
        "_acked_index",
        "_gap",
        "_unacked_messages",
        "_active_partitions",
        "_paused_partitions",
        "suspend_flow",
        "flow_active",
    ):
        assert hasattr(consumer, name), name
    for method in ("stop_flow", "resume_flow", "wait_for_stopped_flow", "_new_offset"):
        assert callable(getattr(consumer, method)), method
    assert callable(getattr(app.producer, "_ensure_producer", None))
    assert callable(getattr(faust.Stream, "_set_current_event", None))
    assert callable(AIOKafkaProducer.create_batch) and callable(AIOKafkaProducer.send_batch)
    assert faust_patches.committed_offsets(app) == {}
    assert faust_patches.describe_producer(app) == "no producer"
    assert faust_patches.describe_consumer(app)[-1] == "consumer: 0 unacked messages, first []"

    async def describe_an_unstarted_client() -> str:
        client = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")
        cast(Any, app.producer)._producer = client
        try:
            return faust_patches.describe_producer(app)
        finally:
            await client.stop()

    described = asyncio.run(describe_an_unstarted_client())
    assert described.startswith("batches (count, age s, leader) {}; pending 0; in flight")


class _Event:
    """Stands for a Faust event: Faust keeps a weak reference to the current one."""


def test_a_stream_s_current_event_can_be_set(tmp_path: Path) -> None:
    app = create_app(Settings(state_dir=tmp_path, topic_prefix="t."))
    stream = app.stream(app.topic("t.interactions"))
    event: Any = _Event()
    faust_patches.set_current_event(stream, event)
    assert cast(faust.Stream, stream).current_event is event
    faust_patches.set_current_event(stream, None)
    assert cast(faust.Stream, stream).current_event is None


def _acked(consumer: Any, tp: TP, offsets: range) -> None:
    for offset in offsets:
        consumer._acked[tp].append(offset)
        consumer._acked_index[tp].add(offset)


def test_a_jump_in_read_offsets_commits_nothing_unacknowledged(tmp_path: Path) -> None:
    consumer: Any = create_app(Settings(state_dir=tmp_path, topic_prefix="t.")).consumer
    tp = TP("t.interactions", 0)
    _acked(consumer, tp, range(0, 10))
    # Recovery's seek put the read offset back to 4 after 0..9 were read; the next record
    # the fetcher hands over is 12. Faust's consumer calls this with the offsets between.
    asyncio.run(consumer._add_gap(tp, 5, 12))
    assert consumer._new_offset(tp) == 10  # not 13: 10..12 are not processed yet

    _acked(consumer, tp, range(10, 20))
    assert consumer._new_offset(tp) == 20  # one commit covers the whole run, no creeping


def _seek_seeing_flow(consumer: Any, tp: TP, committed: int, during: list[bool]) -> None:
    async def seek_to_committed() -> dict[TP, int]:
        during.append(consumer.flow_active)
        return {tp: committed}

    consumer.seek_to_committed = seek_to_committed


def test_the_seek_to_committed_offsets_runs_with_the_flow_stopped(tmp_path: Path) -> None:
    app = create_app(Settings(state_dir=tmp_path, topic_prefix="t."))
    consumer: Any = app.consumer
    tp = TP("t.interactions", 0)
    consumer._read_offset[tp] = 40  # records up to 40 were read before the seek
    during: list[bool] = []
    _seek_seeing_flow(consumer, tp, 25, during)
    assert consumer.flow_active

    asyncio.run(consumer.perform_seek())
    assert during == [False]  # no record was handed over while the offsets moved back
    assert consumer.flow_active  # and the flow runs again, from the committed offset
    assert consumer._read_offset[tp] == 25


def test_a_seek_during_a_rebalance_leaves_the_flow_stopped(tmp_path: Path) -> None:
    app = create_app(Settings(state_dir=tmp_path, topic_prefix="t."))
    consumer: Any = app.consumer
    tp = TP("t.interactions", 0)
    during: list[bool] = []
    _seek_seeing_flow(consumer, tp, 25, during)
    consumer.stop_flow()  # Faust's own rebalance path: it resumes the flow itself
    asyncio.run(consumer.perform_seek())
    assert during == [False]
    assert not consumer.flow_active

    # A rebalance that starts while the seek runs keeps the flow stopped too.
    consumer.resume_flow()
    generation = app.consumer_generation_id

    async def seek_then_rebalance() -> dict[TP, int]:
        app.consumer_generation_id = generation + 1
        return {tp: 25}

    consumer.seek_to_committed = seek_then_rebalance
    asyncio.run(consumer.perform_seek())
    assert not consumer.flow_active


def _on_consumer_loop(consumer: Any, coroutine: Any) -> Any:
    """Run on the loop the consumer's services use, as the worker's fetch loop does."""
    return consumer.loop.run_until_complete(asyncio.wait_for(coroutine, 10))


def _handover(ran_in: list[Any], wait_on: asyncio.Future[str] | None = None) -> Any:
    async def on_message() -> str:
        ran_in.append(asyncio.current_task())
        if wait_on is None:
            return "handed over"
        try:
            return await wait_on
        except asyncio.CancelledError:
            ran_in.append("cancelled")
            raise

    return on_message()


def test_a_handover_that_never_waits_runs_in_the_fetch_loops_own_task(tmp_path: Path) -> None:
    consumer: Any = create_app(Settings(state_dir=tmp_path, topic_prefix="t.")).consumer
    ran_in: list[Any] = []

    async def fetch_loop() -> Any:
        result = await consumer.wait_first(_handover(ran_in), consumer.suspend_flow.wait())
        return result, asyncio.current_task()

    result, fetch_task = _on_consumer_loop(consumer, fetch_loop())
    assert ran_in == [fetch_task]  # no task of its own
    assert result.results == ["handed over"] and not result.stopped


def test_a_handover_that_waits_finishes_when_its_wait_ends(tmp_path: Path) -> None:
    consumer: Any = create_app(Settings(state_dir=tmp_path, topic_prefix="t.")).consumer
    ran_in: list[Any] = []

    async def fetch_loop() -> list[Any]:
        queue_space: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        waiting = asyncio.ensure_future(
            consumer.wait_first(_handover(ran_in, queue_space), consumer.suspend_flow.wait())
        )
        await asyncio.sleep(0.01)
        assert not waiting.done()
        queue_space.set_result("put")
        return list((await waiting).results)

    assert _on_consumer_loop(consumer, fetch_loop()) == ["put"]
    assert len(ran_in) == 1


def test_a_waiting_handover_is_abandoned_when_the_flow_stops(tmp_path: Path) -> None:
    consumer: Any = create_app(Settings(state_dir=tmp_path, topic_prefix="t.")).consumer
    ran_in: list[Any] = []

    async def fetch_loop() -> Any:
        never: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        waiting = asyncio.ensure_future(
            consumer.wait_first(_handover(ran_in, never), consumer.suspend_flow.wait())
        )
        await asyncio.sleep(0.01)
        consumer.stop_flow()  # a rebalance: Faust's wait_first gives up on the handover
        result = await waiting
        await asyncio.sleep(0.01)
        return result

    result = _on_consumer_loop(consumer, fetch_loop())
    assert ran_in[-1] == "cancelled"
    assert result.results == [True]  # the suspend event won


def test_a_handover_that_fails_raises_in_the_fetch_loop(tmp_path: Path) -> None:
    consumer: Any = create_app(Settings(state_dir=tmp_path, topic_prefix="t.")).consumer

    async def broken() -> None:
        raise ValueError("undecodable")

    async def fetch_loop() -> None:
        await consumer.wait_first(broken(), consumer.suspend_flow.wait())

    with pytest.raises(ValueError, match="undecodable"):
        _on_consumer_loop(consumer, fetch_loop())


def _private_reads(tree: ast.AST) -> set[str]:
    """Private attributes read on anything but ``self`` or ``cls``."""
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
    }


def _defined(tree: ast.AST) -> set[str]:
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    }


def test_no_other_stream_module_reads_a_private_name_of_a_library() -> None:
    """Every private name of Faust or aiokafka is used in streams/faust_patches.py, where
    the tests above check it; elsewhere only the project's own private names are read
    (and confluent-kafka's ``KafkaError._PARTITION_EOF``, its documented end-of-partition
    code)."""
    root = Path(faust_patches.__file__).parent
    trees = {path: ast.parse(path.read_text()) for path in root.rglob("*.py")}
    own = set().union(*(_defined(tree) for tree in trees.values())) | {"_PARTITION_EOF"}
    outside = {
        path.relative_to(root.parent).as_posix(): sorted(_private_reads(tree) - own)
        for path, tree in trees.items()
        if path.name != "faust_patches.py"
    }
    assert {path: names for path, names in outside.items() if names} == {}
