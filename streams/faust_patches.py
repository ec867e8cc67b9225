"""Everything the worker does with Faust's and aiokafka's internals, in one place.

Tested against faust-streaming 0.15.3 and aiokafka 0.14.0 (both pinned in
``pyproject.toml``). ``tests/unit/streams/test_faust_patches.py`` checks every name used
here and the behaviour each patch relies on, and fails on any other version: after an
upgrade, read each upstream issue named below, drop the patches it fixes, and re-pin.

Patches (installed by ``install``, called from ``streams.app.create_app``):

- ``_refuse_offset_gaps``: the consumer's ``_add_gap`` (faust-streaming #606, #312).
- ``_seek_with_flow_stopped``: the consumer's ``perform_seek`` (faust-streaming #216, #221).
- ``_hand_over_in_place``: the consumer's ``wait_first`` in its fetch loop, for speed
  (robinhood/faust #563; the same call is at the heart of faust-streaming #229).

Private reads, for the worker's own writes and its diagnostics: ``kafka_producer``,
``set_current_event``, ``committed_offsets``, ``describe_producer``, ``describe_consumer``.
No other module names a private attribute of Faust or aiokafka.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Coroutine, Generator, Mapping
from typing import Any

import faust
from faust.types import TP, EventT, StreamT
from mode.services import WaitResults

log = logging.getLogger(__name__)


def install(app: faust.App) -> None:
    """Apply every patch to ``app``'s consumer."""
    _refuse_offset_gaps(app)
    _seek_with_flow_stopped(app)
    _hand_over_in_place(app)


# -- patches ---------------------------------------------------------------------------


def _refuse_offset_gaps(app: faust.App) -> None:
    """Never count offsets the consumer jumped over as processed; only acked ones are.

    Upstream: faust-streaming #606 ("Wrong offset commit in case of gaps", open), after
    #312/#378. Faust treats a jump in the offsets it reads as a gap of missing records (as
    in a compacted topic) and commits past it. The topics this worker reads have no
    missing offsets; the jumps the kill test met came from the seek at the end of recovery
    (``_seek_with_flow_stopped`` prevents them). Each "gap" covered records that had been
    read, which were then counted twice, so the commit, which advances over runs of
    consecutive offsets, crept forward by one or two offsets a commit (a worker that
    looked stalled with lag left), or records that had never been handed over, which the
    commit then passed: lost. Without gaps an offset is committed only once acked; a hole
    holds the commit back, where it shows as lag, instead of losing records.
    """
    consumer: Any = app.consumer

    async def jumped(tp: TP, offset_from: int, offset_to: int) -> None:
        log.warning(
            "%s[%s]: read offset %s after %s; the records between count only once acked",
            tp.topic,
            tp.partition,
            offset_to,
            offset_from - 1,
        )

    consumer._add_gap = jumped


def _seek_with_flow_stopped(app: faust.App) -> None:
    """Seek the stream partitions to their committed offsets only while no record flows.

    Upstream: faust-streaming #216 (fixed for recovery without tables by #217) and #221
    (prefetched records handed over around a rebalance's seek). In 0.15.3
    ``Recovery.on_recovery_completed`` still resumes the stream partitions and then seeks
    them with the flow of records running: records read before the seek are handed over
    while it moves the read offsets back, and records fetched around it were found never
    handed over at all, a hole the commit cannot pass (the kill test, about one run in
    five). Here that seek stops the flow first, lets the record in hand finish, seeks, and
    lets the flow run again, from the committed offsets: records read before the seek come
    again, and every fold skips what it has already folded (``streams.batches.once`` drops
    a second delivery within one batch). When Faust calls the seek with the flow already
    stopped (a rebalance), it runs as is.
    """
    consumer: Any = app.consumer
    seek = consumer.perform_seek

    async def perform_seek() -> None:
        if not consumer.flow_active:
            await seek()
            return
        generation = app.consumer_generation_id
        consumer.stop_flow()
        try:
            await consumer.wait_for_stopped_flow()
            await asyncio.sleep(FLOW_SETTLE_SECONDS)  # the record in hand sets its offset
            await seek()
        finally:
            if app.consumer_generation_id == generation:  # else a rebalance holds the flow
                consumer.resume_flow()

    consumer.perform_seek = perform_seek


# How long a stopped flow is given to finish the record in hand before a seek.
FLOW_SETTLE_SECONDS = 0.1


def _hand_over_in_place(app: faust.App) -> None:
    """Hand each fetched record to its stream without four tasks and an ``asyncio.wait``.

    Upstream: robinhood/faust #563 (consumption slow per message) is the cost; the call is
    the one faust-streaming #229 points at. Faust's fetch loop (``Consumer._drain_messages``)
    hands over every record as ``wait_first(callback(message), suspend_flow.wait())``: the
    handover, unless the flow is stopped first. ``wait_first`` makes a task of each (and of
    the consumer's stopped and crashed events), waits for the first, and cancels the rest:
    about a sixth of the worker's time, per record (py-spy, `bench/worker_throughput.py`).
    The handover almost never waits (it decodes the record and puts it in the stream's
    queue), so here it is started in place, and when it finishes in that first step no
    task is made at all. When it does wait (the queue full, the flow paused) or when the
    flow is already stopped, it goes on under Faust's own ``wait_first`` from where it
    stood, with the same outcome as before: abandoned if the flow stops first. Any other
    call is Faust's ``wait_first``, as is.
    """
    consumer: Any = app.consumer
    wait_first = consumer.wait_first

    async def hand_over_first(*waits: Any, timeout: Any = None) -> WaitResults:
        if not _is_handover(consumer, waits, timeout):
            return await wait_first(*waits, timeout=timeout)
        handover, suspended = waits
        try:
            blocked_on = handover.send(None)
        except StopIteration as finished:
            suspended.close()
            return WaitResults([handover], [finished.value], False)
        except BaseException:
            suspended.close()
            raise
        return await wait_first(_resumed(handover, blocked_on), suspended)

    consumer.wait_first = hand_over_first


def _is_handover(consumer: Any, waits: tuple[Any, ...], timeout: Any) -> bool:
    """Whether a ``wait_first`` call is the fetch loop's handover of a record, with the
    flow running: a coroutine not started yet, raced against ``suspend_flow.wait()``."""
    if len(waits) != 2 or timeout is not None or consumer.suspend_flow.is_set():
        return False
    handover, suspended = waits
    frame = getattr(suspended, "cr_frame", None)
    return (
        asyncio.iscoroutine(handover)
        and inspect.getcoroutinestate(handover) == inspect.CORO_CREATED
        and frame is not None
        and frame.f_code is asyncio.Event.wait.__code__
        and frame.f_locals.get("self") is consumer.suspend_flow
    )


async def _resumed(coroutine: Coroutine[Any, Any, Any], blocked_on: Any) -> Any:
    """Await ``coroutine``, which was stepped by hand and now waits on ``blocked_on``."""
    return await _Resume(coroutine, blocked_on)


class _Resume:
    def __init__(self, coroutine: Coroutine[Any, Any, Any], blocked_on: Any) -> None:
        self._coroutine = coroutine
        self._blocked_on = blocked_on

    def __await__(self) -> Generator[Any, Any, Any]:
        # What ``await`` does for a coroutine, from its first suspension on: pass what it
        # waits on to the task, and pass back the task's resumption or exception.
        coroutine, waiting_on = self._coroutine, self._blocked_on
        while True:
            try:
                sent = yield waiting_on
            except GeneratorExit:
                coroutine.close()
                raise
            except BaseException as exc:
                try:
                    waiting_on = coroutine.throw(exc)
                except StopIteration as finished:
                    return finished.value
            else:
                try:
                    waiting_on = coroutine.send(sent)
                except StopIteration as finished:
                    return finished.value


# -- private reads ---------------------------------------------------------------------


def kafka_producer(app: faust.App) -> Any:
    """The aiokafka producer under Faust's, started if need be: its public batch API
    (``create_batch``, ``send_batch``) sends a table's changelog records in whole batches
    (``streams.changelog``); Faust exposes no public handle to it."""
    return app.producer._ensure_producer()  # type: ignore[attr-defined]


def set_current_event(stream: StreamT, event: EventT | None) -> None:
    """Make ``event`` the stream's current event: a table write goes to the changelog
    partition of the current event, and Faust offers no public way to choose it."""
    stream._set_current_event(event)  # type: ignore[attr-defined]


def committed_offsets(app: faust.App) -> Mapping[TP, int | None]:
    """The offsets Faust last committed, per partition (the consumer keeps no public copy)."""
    committed: Mapping[TP, int | None] = app.consumer._committed_offset  # type: ignore[attr-defined]
    return committed


def describe_producer(app: faust.App) -> str:
    """The aiokafka producer's batches, senders and wake-ups, for a log line."""
    client: Any = getattr(app.producer, "_producer", None)  # not started: None
    if client is None:
        return "no producer"
    sender, accumulator = client._sender, client._message_accumulator
    now = time.monotonic()
    batches = {
        f"{tp.topic}[{tp.partition}]": (
            len(queue),
            round(now - queue[0]._ctime, 1) if queue else None,
            client.client.cluster.leader_for_partition(tp),
        )
        for tp, queue in accumulator._batches.items()
    }
    muted = sorted(map(str, sender._muted_partitions))
    return (
        f"batches (count, age s, leader) {batches}; pending {len(accumulator._pending_batches)}; "
        f"in flight {sorted(sender._in_flight)}; muted {muted}; "
        f"waiter done {accumulator._waiter_future.done()}; "
        f"wakeup {accumulator._wakeup_handle is not None}; sender task {sender.sender_task!r}"
    )


def describe_consumer(app: faust.App) -> list[str]:
    """The consumer's flow state, then per partition: committed and read offsets, the log
    end, the head of the acked offsets waiting to be committed (a hole there holds every
    later commit back) and the gaps Faust skips; then the unacked messages."""
    consumer: Any = app.consumer
    lines = [
        "consumer: flow active {}, suspended {}, active {}, paused {}".format(
            getattr(consumer, "flow_active", None),
            consumer.suspend_flow.is_set() if hasattr(consumer, "suspend_flow") else None,
            sorted(map(str, getattr(consumer, "_active_partitions", None) or ())),
            sorted(map(str, getattr(consumer, "_paused_partitions", None) or ())),
        )
    ]
    for tp in sorted(getattr(consumer, "_acked", {}) or {}, key=str):
        acked = sorted(consumer._acked[tp])
        gaps = consumer._gap.get(tp)
        lines.append(
            f"consumer {tp.topic}[{tp.partition}]: committed "
            f"{consumer._committed_offset.get(tp)}, read {consumer._read_offset.get(tp)}, "
            f"end {consumer.highwater(tp)}, {len(acked)} acked from {acked[:5]}"
            f"{' ...' if len(acked) > 5 else ''}, gaps {sorted(gaps)[:5] if gaps else None}"
        )
    unacked = sorted((m.topic, m.partition, m.offset) for m in list(consumer._unacked_messages))
    lines.append(f"consumer: {len(unacked)} unacked messages, first {unacked[:10]}")
    return lines


def consumer_thread_loop(app: faust.App) -> asyncio.AbstractEventLoop | None:
    """The event loop of the consumer's thread, where the Kafka client fetches."""
    thread = getattr(app.consumer, "_thread", None)
    loop: asyncio.AbstractEventLoop | None = getattr(thread, "thread_loop", None)
    return loop
