"""The Faust app: one ``faust.App`` per worker process, built from settings.

The app is made by a factory rather than at import time (no configuration exists before
``create_app`` is called), so the agents are attached by ``streams.agents.attach``
instead of autodiscovery.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Coroutine, Generator
from dataclasses import dataclass
from typing import Any

import faust
from faust.sensors.monitor import Monitor
from mode.services import WaitResults
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streamrec.settings import Settings
from streams.events import Topics

log = logging.getLogger(__name__)


@dataclass
class WorkerMetrics:
    registry: CollectorRegistry
    events: Counter
    dead_letters: Counter
    duplicates: Counter
    redelivered: Counter
    push_seconds: Histogram
    batch_seconds: Histogram
    stage_seconds: Histogram
    lag: Gauge

    @classmethod
    def create(cls) -> WorkerMetrics:
        registry = CollectorRegistry()
        return cls(
            registry=registry,
            events=Counter(
                "streamrec_worker_events", "Events folded", ["topic"], registry=registry
            ),
            dead_letters=Counter(
                "streamrec_worker_dead_letters",
                "Records sent to the dead-letter topic",
                ["topic"],
                registry=registry,
            ),
            duplicates=Counter(
                "streamrec_worker_duplicates",
                "Redelivered events recognised by event_id and skipped",
                registry=registry,
            ),
            redelivered=Counter(
                "streamrec_worker_redelivered",
                "Records at or below an already folded offset (redelivery after a crash), skipped",
                ["topic"],
                registry=registry,
            ),
            batch_seconds=Histogram(
                "streamrec_worker_batch_seconds",
                "Time to fold one batch, pushes included",
                ["topic"],
                registry=registry,
                buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            ),
            stage_seconds=Histogram(
                "streamrec_worker_stage_seconds",
                "Time of one stage of a batch: decode_fold, table_write, feast_push_and_seen, "
                "notify, send_entries (interactions); fold_entries, table_write, feast_push "
                "(item activity)",
                ["topic", "stage"],
                registry=registry,
                buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
            ),
            lag=Gauge(
                "streamrec_worker_consumer_lag",
                "Records between the committed offset and the log end, per partition "
                "(set when /metrics is read)",
                ["topic", "partition"],
                registry=registry,
            ),
            push_seconds=Histogram(
                "streamrec_worker_push_seconds",
                "Time of one Feast push",
                ["source"],
                registry=registry,
                buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            ),
        )


def create_app(settings: Settings) -> faust.App:
    topics = Topics(settings.topic_prefix)
    app = faust.App(
        f"{topics.prefix}worker",
        broker=f"kafka://{settings.bootstrap_servers}",
        broker_credentials=_credentials(settings),
        store="memory://",  # tables live in memory, recovered from their changelog topics
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.replication_factor,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        web_enabled=True,
        web_host=settings.worker_host,
        web_port=settings.worker_port,
        broker_commit_every=settings.worker_batch_size,
        # A worker killed without leaving its group holds its partitions until the session
        # times out; faust's 60 s default keeps a restarted worker idle that long.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
        # Let aiokafka gather the per-batch sends into few produce requests.
        producer_linger_ms=5,
        producer_max_batch_size=256 * 1024,
        stream_buffer_maxsize=4 * settings.worker_batch_size,
        datadir=str(settings.state_dir / "worker"),
        monitor=QuietMonitor(),
    )
    _refuse_offset_gaps(app)
    _seek_with_flow_stopped(app)
    _hand_over_in_place(app)
    return app


def _credentials(settings: Settings) -> faust.SASLCredentials | faust.SSLCredentials | None:
    """Faust's (aiokafka's) form of the broker security in ``settings``."""
    import ssl

    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = None
    if protocol.endswith("SSL"):
        context = ssl.create_default_context(cafile=settings.kafka_ssl_ca_location or None)
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    password = settings.kafka_sasl_password
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=password.get_secret_value() if password else "",
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=context,
    )


class QuietMonitor(Monitor):
    """Faust's monitor without its statistics of every record and event.

    They feed only Faust's own web pages, and the worker keeps its own Prometheus
    metrics; kept per record, they were about 3 % of its time (py-spy). What Faust
    itself reads stays: when each partition's stream last took an event (its warning
    about a stream that stopped processing), and everything below the record level
    (commits, end offsets, tables, sends).
    """

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        self.stream_inbound_time[tp] = time.monotonic()
        return None

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None


def _hand_over_in_place(app: faust.App) -> None:
    """Hand each fetched record to its stream without four tasks and an ``asyncio.wait``.

    Faust's fetch loop hands over every record as ``wait_first(callback(message),
    suspend_flow.wait())``: the handover, unless the flow is stopped first. ``wait_first``
    makes a task of each (and of the consumer's stopped and crashed events), waits for
    the first, and cancels the rest: about a sixth of the worker's time, per record
    (py-spy, `bench/worker_throughput.py`). The handover almost never waits (it decodes
    the record and puts it in the stream's queue), so here it is started in place, and
    when it finishes in that first step no task is made at all. When it does wait (the
    queue full, the flow paused) or when the flow is already stopped, it goes on under
    Faust's own ``wait_first`` from where it stood, with the same outcome as before:
    abandoned if the flow stops first. Any other call is Faust's ``wait_first``, as is.
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


def _seek_with_flow_stopped(app: faust.App) -> None:
    """Seek the stream partitions to their committed offsets only while no record flows.

    At the end of recovery Faust resumes the stream partitions and then seeks them to the
    committed offsets, with the flow of records already running: records read before the
    seek are handed over while it moves the read offsets back, and records fetched around
    it were found never handed over at all, a hole the commit cannot pass (the kill test,
    about one run in five). Here that seek stops the flow first, lets the record in hand
    finish, seeks, and lets the flow run again, from the committed offsets: records read
    before the seek come again, and every fold skips what it has already folded. When
    Faust calls the seek with the flow already stopped (a rebalance), it runs as is.
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


def _refuse_offset_gaps(app: faust.App) -> None:
    """Never count offsets the consumer jumped over as processed; only acked ones are.

    Faust treats a jump in the offsets it reads as a gap of missing records (as in a
    compacted topic) and commits past it. The topics this worker reads have no missing
    offsets; the jumps the kill test met came from the seek at the end of recovery
    (``_seek_with_flow_stopped`` prevents them). Each "gap" covered records that had
    been read, which were then counted twice, so the commit, which advances over runs of
    consecutive offsets, crept forward by one or two offsets a commit (a worker that
    looked stalled with lag left), or records that had never been handed over, which the
    commit then passed: lost. Without gaps an offset is committed only once acked; a
    hole holds the commit back, where it shows as lag, instead of losing records.
    """
    consumer: Any = app.consumer

    async def jumped(tp: Any, offset_from: int, offset_to: int) -> None:
        log.warning(
            "%s[%s]: read offset %s after %s; the records between count only once acked",
            tp.topic,
            tp.partition,
            offset_to,
            offset_from - 1,
        )

    consumer._add_gap = jumped
