"""Replay as a service: the API runs the CLI's own :class:`replay.replayer.Replayer` as a
managed task, one at a time per API (and so per topic prefix); with several API
processes, ``api.replay_shared`` makes that one per service.

The replayer's ``run`` blocks, so it runs in a worker thread owned by an asyncio task of
the API's lifespan, not of a request: a client that starts a replay and disconnects leaves
it running, and shutdown stops it (``close``), which flushes the producer before the
process exits. Controls (pause, resume, speed, seek) are the replayer's own thread-safe
methods. Seek semantics are in docs/design.md ("Replay as a service"): the log is never
rewritten; a seek makes the next event sent the first at or after the target time.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import anyio
import pyarrow.parquet as pq

from replay.replayer import FAILED, FINISHED, STOPPED, Replayer, ReplayError, ReplayStatus, Sink
from streamrec.paths import dataset_events, datasets_dir

logger = logging.getLogger(__name__)

# How long shutdown waits for a stopped replay to flush its producer.
STOP_SECONDS = 30.0
ENDED = frozenset({FINISHED, STOPPED, FAILED})

# Opens the sink a replay writes to and returns it with the function that closes it.
SinkFactory = Callable[[], tuple[Sink, Callable[[], None]]]


class ReplayConflict(RuntimeError):
    """A replay is already running; the message names it."""


class NoReplay(LookupError):
    """No replay is running, so there is nothing to control."""


class BackwardSeek(ValueError):
    """A seek before what a replay without ``rebase_now`` already sent."""


class UnknownSource(LookupError):
    """The named log is not prepared."""


@dataclass(frozen=True)
class LogRange:
    """A prepared log's extent: what the cockpit's slider spans."""

    source: str
    first_ms: int
    last_ms: int
    events: int


@dataclass(frozen=True)
class ReplayRequest:
    source: str
    speed: float | None  # None: as fast as possible
    since_ms: int | None = None
    until_ms: int | None = None
    rebase_now: bool = False


@dataclass(frozen=True)
class ReplayView:
    """What ``GET /admin/replay`` reports about one run."""

    run_id: str
    request: ReplayRequest
    started_at: float  # epoch seconds
    status: ReplayStatus
    log: LogRange
    error: str | None

    @property
    def lag_ms(self) -> float | None:
        """How far the last event sent trails the event time the pace says is due."""
        due, position = self.status.due_ms, self.status.position_ms
        if due is None or position is None:
            return None
        return max(0.0, due - position)


def log_range(data_dir: Path, source: str) -> LogRange:
    """First and last event time of a prepared log, from the Parquet footer's statistics."""
    path = dataset_events(data_dir, source)
    if not path.is_file():
        raise UnknownSource(f"{source!r} is not prepared ({path} does not exist)")
    metadata = pq.ParquetFile(path).metadata
    column = metadata.schema.to_arrow_schema().get_field_index("event_time")
    low, high = math.inf, -math.inf
    for group in range(metadata.num_row_groups):
        stats = metadata.row_group(group).column(column).statistics
        if stats is None or not stats.has_min_max:
            table = pq.read_table(path, columns=["event_time"])
            times = table.column("event_time")
            return LogRange(source, int(times[0].as_py()), int(times[-1].as_py()), table.num_rows)
        low, high = min(low, stats.min), max(high, stats.max)
    if metadata.num_rows == 0:
        raise UnknownSource(f"{source!r} has no events")
    return LogRange(source, int(low), int(high), metadata.num_rows)


def prepared_sources(data_dir: Path) -> list[str]:
    """Names of the prepared datasets under ``<data_dir>/datasets``."""
    root = datasets_dir(data_dir)
    if not root.is_dir():
        return []
    return sorted(p.parent.name for p in root.glob("*/events.parquet"))


class ReplayControl:
    """Owns at most one running replay; ``close`` stops it on shutdown."""

    def __init__(self, data_dir: Path, open_sink: SinkFactory) -> None:
        self._data_dir = Path(data_dir)
        self._open_sink = open_sink
        self._current: _Run | None = None
        self._lock = asyncio.Lock()

    async def start(self, request: ReplayRequest) -> ReplayView:
        async with self._lock:
            current = self._current
            if current is not None and current.replayer.status().state not in ENDED:
                raise ReplayConflict(
                    f"replay {current.run_id} of {current.request.source!r} is "
                    f"{current.replayer.status().state}; stop it first"
                )
            extent = await anyio.to_thread.run_sync(log_range, self._data_dir, request.source)
            sink, close_sink = await anyio.to_thread.run_sync(self._open_sink)
            try:
                replayer = Replayer(
                    dataset_events(self._data_dir, request.source),
                    sink,
                    speed=request.speed,
                    since_ms=request.since_ms,
                    until_ms=request.until_ms,
                    rebase_now=request.rebase_now,
                )
            except (ReplayError, ValueError):
                await anyio.to_thread.run_sync(close_sink)
                raise
            run = _Run(uuid.uuid4().hex[:12], request, time.time(), replayer, extent, close_sink)
            run.task = asyncio.create_task(run.run(), name=f"replay-{run.run_id}")
            self._current = run
            return run.view()

    def view(self) -> ReplayView | None:
        return self._current.view() if self._current is not None else None

    def _running(self) -> _Run:
        run = self._current
        if run is None or run.replayer.status().state in ENDED:
            raise NoReplay("no replay is running; start one with POST /admin/replay")
        return run

    def pause(self) -> ReplayView:
        run = self._running()
        run.replayer.pause()
        return run.view()

    def resume(self) -> ReplayView:
        run = self._running()
        run.replayer.resume()
        return run.view()

    def set_speed(self, speed: float | None) -> ReplayView:
        run = self._running()
        run.replayer.set_speed(speed)
        return run.view()

    def seek(self, t_ms: int) -> ReplayView:
        """Without ``rebase_now``, only forward: events sent again with their own ids and
        times would count twice in the counts the worker folds (docs/design.md)."""
        run = self._running()
        position = run.replayer.status().position_ms
        if not run.request.rebase_now and position is not None and t_ms <= position:
            raise BackwardSeek(
                f"this replay has sent events up to {position} ms; seeking back to {t_ms} "
                "would send the same events again: start a replay with rebase_now to replay "
                "them as new events"
            )
        run.replayer.seek(t_ms)
        return run.view()

    async def stop(self) -> ReplayView:
        run = self._running()
        await run.stop(STOP_SECONDS)
        return run.view()

    async def close(self) -> None:
        run = self._current
        if run is not None:
            await run.stop(STOP_SECONDS)


class ReplayControls(Protocol):
    """What the routes call: ``OneProcessReplay`` for an API of one process,
    ``api.replay_shared.SharedReplayControl`` for one of several."""

    async def start(self, request: ReplayRequest) -> ReplayView: ...
    async def view(self) -> ReplayView | None: ...
    async def pause(self) -> ReplayView: ...
    async def resume(self) -> ReplayView: ...
    async def set_speed(self, speed: float | None) -> ReplayView: ...
    async def seek(self, t_ms: int) -> ReplayView: ...
    async def stop(self) -> ReplayView: ...
    async def close(self) -> None: ...


class OneProcessReplay:
    """The routes' face of a :class:`ReplayControl` when this process is the whole API."""

    def __init__(self, control: ReplayControl) -> None:
        self._control = control

    async def start(self, request: ReplayRequest) -> ReplayView:
        return await self._control.start(request)

    async def view(self) -> ReplayView | None:
        return self._control.view()

    async def pause(self) -> ReplayView:
        return self._control.pause()

    async def resume(self) -> ReplayView:
        return self._control.resume()

    async def set_speed(self, speed: float | None) -> ReplayView:
        return self._control.set_speed(speed)

    async def seek(self, t_ms: int) -> ReplayView:
        return self._control.seek(t_ms)

    async def stop(self) -> ReplayView:
        return await self._control.stop()

    async def close(self) -> None:
        await self._control.close()


class _Run:
    """One replay: its replayer, the task running it, and how it ended."""

    def __init__(
        self,
        run_id: str,
        request: ReplayRequest,
        started_at: float,
        replayer: Replayer,
        extent: LogRange,
        close_sink: Callable[[], None],
    ) -> None:
        self.run_id = run_id
        self.request = request
        self.started_at = started_at
        self.replayer = replayer
        self.extent = extent
        self.error: str | None = None
        self.task: asyncio.Task[None] | None = None
        self._close_sink = close_sink

    async def run(self) -> None:
        try:
            # Not cancellable from here: a cancelled await leaves the thread running, so
            # stopping goes through replayer.stop() and this task then ends by itself.
            await anyio.to_thread.run_sync(self.replayer.run, abandon_on_cancel=False)
        except ReplayError as exc:
            self.error = str(exc)
            logger.error("replay %s failed: %s", self.run_id, exc)
        finally:
            try:
                await anyio.to_thread.run_sync(self._close_sink)
            except RuntimeError as exc:  # DeliveryFailed: records still queued at close
                self.error = self.error or str(exc)
                logger.error("replay %s: closing its producer: %s", self.run_id, exc)

    async def stop(self, timeout: float) -> None:
        self.replayer.stop()
        if self.task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self.task), timeout)
            except TimeoutError:
                logger.error("replay %s did not stop within %.0fs", self.run_id, timeout)

    def view(self) -> ReplayView:
        return ReplayView(
            run_id=self.run_id,
            request=self.request,
            started_at=self.started_at,
            status=self.replayer.status(),
            log=self.extent,
            error=self.error,
        )
