"""The worker's Faust app commits an offset only once its record is acknowledged."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest
from faust.types import TP

from streamrec.settings import Settings
from streams.app import QuietMonitor, create_app


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


def test_the_monitor_keeps_only_what_faust_reads_per_event(tmp_path: Path) -> None:
    app = create_app(Settings(state_dir=tmp_path, topic_prefix="t."))
    tp = TP("t.interactions", 0)
    stream: Any = object()
    assert isinstance(app.monitor, QuietMonitor)  # the one Faust adds to its sensors at start
    assert app.monitor.on_stream_event_in(tp, 3, stream, cast(Any, None)) is None
    assert tp in app.monitor.stream_inbound_time  # Faust's stalled-stream warning reads it
    assert app.monitor.events_total == 0  # no per-event statistics
