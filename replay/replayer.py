"""The replayer: a prepared log to Interaction events, in event-time order, at a chosen speed.

One :class:`Replayer` runs in one thread (``run`` blocks); ``pause``, ``resume``,
``set_speed``, ``seek``, ``stop`` and ``status`` may be called from any other thread, which
is how the API's admin routes drive it.

Pacing keeps an *anchor*: a wall time and the event time that is due then. An event with
time ``t`` is due at ``anchor_wall + (t - anchor_event) / speed``. Sending everything that
is due (or nearly due) before sleeping once batches the sleeps, so ``speed=1000`` is not
one ``sleep`` per event, and the anchor keeps errors from accumulating. Pause, seek and a
speed change move the anchor, so none of them makes the replay rush to catch up.

Sleeps are at most ``max_sleep`` long, so controls take effect within that time; the clock
is injected so tests drive all of this with a fake clock and no real waiting.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from replay.encoding import RecordRejected, Records, encode_rows
from streams.events import Interaction, decode

IDLE, RUNNING, PAUSED, FINISHED, STOPPED, FAILED = (
    "idle",
    "running",
    "paused",
    "finished",
    "stopped",
    "failed",
)


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (also used to rebase event times to now)."""
        ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Epoch seconds that never go backwards: the epoch at start plus monotonic time."""

    def __init__(self) -> None:
        self._epoch = time.time() - time.monotonic()

    def now(self) -> float:
        return self._epoch + time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class Sink(Protocol):
    """Where the records go (:class:`replay.encoding.Records`: the contract's bytes)."""

    def send(self, records: Records) -> None:
        """Queue records in order; a record the sink cannot take is a failure (below)."""
        ...

    def failures(self) -> tuple[int, BaseException | None]:
        """Records that failed so far (refused or not delivered), and the first error."""
        ...

    def flush(self) -> int:
        """Wait for outstanding deliveries; return how many are still undelivered."""
        ...


class ListSink:
    """In-memory sink for tests and dry runs; remembers when (by ``clock``) each was sent."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.records: list[tuple[bytes, bytes]] = []
        self.sent_at: list[float] = []
        self._clock = clock

    def send(self, records: Records) -> None:
        self.records.extend(zip(records.keys, records.values, strict=True))
        if self._clock is not None:
            self.sent_at.extend([self._clock.now()] * len(records))

    @property
    def events(self) -> list[Interaction]:
        """The records decoded by the contract."""
        return [cast(Interaction, decode(Interaction, value)) for _, value in self.records]

    def failures(self) -> tuple[int, BaseException | None]:
        return 0, None

    def flush(self) -> int:
        return 0


class ReplayError(RuntimeError):
    """The replay could not run, or events were not delivered."""


@dataclass(frozen=True)
class ReplayStatus:
    state: str  # idle, running, paused, finished, stopped or failed
    position_ms: int | None  # log event time of the last event sent
    events_sent: int
    delivery_failures: int
    rate: float  # events per second of running (not paused) time
    speed: float | None  # None: as fast as possible
    # Log event time that pacing says is due now; due_ms - position_ms is how far the
    # replay trails its pace (None when paced by nothing: max speed, or not started).
    due_ms: float | None = None


def check_speed(speed: float | None) -> float | None:
    if speed is not None and not (math.isfinite(speed) and speed > 0):
        raise ValueError(f"speed must be a positive number or None (max), got {speed}")
    return speed


class Replayer:
    """Replays ``events.parquet`` into a sink; see the module docstring."""

    def __init__(
        self,
        events_path: Path,
        sink: Sink,
        *,
        speed: float | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        rebase_now: bool = False,
        clock: Clock | None = None,
        progress: Callable[[ReplayStatus], None] | None = None,
        progress_interval: float = 0.5,
        batch_rows: int = 65_536,
        chunk_events: int = 8192,
        max_sleep: float = 0.05,
        min_sleep: float = 0.002,
    ) -> None:
        self.events_path = Path(events_path)
        if not self.events_path.is_file():
            raise ReplayError(f"{self.events_path}: no prepared event log")
        try:
            self._file = pq.ParquetFile(self.events_path)
        except (OSError, pa.ArrowException) as exc:
            raise ReplayError(f"{self.events_path}: not a readable Parquet log: {exc}") from exc
        # pyarrow imports pandas the first time it converts a Python value or makes a
        # NumPy view, seconds on a busy machine: paid here, not in the run's first batch
        # (where it cut a 100k-event replay's reported rate by a factor of five).
        import pandas  # noqa: F401

        self._sink = sink
        self._since, self._until = since_ms, until_ms
        self._rebase = rebase_now
        self._clock: Clock = clock or SystemClock()
        self._progress = progress
        self._progress_interval = progress_interval
        self._batch_rows = batch_rows
        self._chunk = chunk_events  # most events in one send: controls act between sends
        self._max_sleep, self._min_sleep = max_sleep, min_sleep
        self._lock = threading.Lock()
        self._started = False
        self._state = IDLE
        self._speed = check_speed(speed)
        self._anchor: tuple[float, float] | None = None  # (wall seconds, event ms)
        self._paused_at: float | None = None  # event-time position when paused
        self._seek_to: int | None = None
        self._offset: int | None = None  # rebase shift in ms
        self._position: int | None = None
        self._sent = 0
        self._failures = 0
        self._sink_failed = 0  # of _failures, those the sink reported
        self._first_failure: BaseException | None = None
        self._active = 0.0  # running seconds before the current stretch
        self._stretch: float | None = None  # start of the current running stretch
        self._last_progress = -math.inf

    # --- controls, callable from any thread ---------------------------------------------

    def pause(self) -> None:
        with self._lock:
            if self._state in (RUNNING, IDLE):
                self._end_stretch()
                self._paused_at = self._event_clock(self._clock.now())
                self._state = PAUSED

    def resume(self) -> None:
        """Continue where the pause left off: the gap to the next event is kept, the
        paused time is not caught up."""
        with self._lock:
            if self._state == PAUSED:
                now = self._clock.now()
                self._state = RUNNING
                self._anchor = None if self._paused_at is None else (now, self._paused_at)
                self._stretch = now

    def set_speed(self, speed: float | None) -> None:
        check_speed(speed)
        with self._lock:
            now = self._clock.now()
            position = self._event_clock(now)
            self._speed = speed
            if self._state == PAUSED:
                self._paused_at = position
            else:
                self._anchor = None if position is None or speed is None else (now, position)

    def seek(self, t_ms: int) -> None:
        """The next event sent is the first in the log with event_time >= ``t_ms``."""
        with self._lock:
            self._seek_to = int(t_ms)

    def stop(self) -> None:
        with self._lock:
            if self._state not in (FINISHED, FAILED):
                self._end_stretch()
                self._state = STOPPED

    def status(self) -> ReplayStatus:
        with self._lock:
            return self._status()

    # --- the run loop ------------------------------------------------------------------

    def run(self) -> ReplayStatus:
        """Replay until the log ends or ``stop``; raise ReplayError if deliveries failed
        or a row of the log is not a valid Interaction."""
        with self._lock:
            if self._started:
                raise ReplayError(f"a replayer runs once; this one is {self._state}")
            self._started = True
            if self._state == IDLE:
                self._state = RUNNING
                self._stretch = self._clock.now()
        start = self._since
        try:
            while True:
                outcome = self._replay_from(start)
                if outcome != "seek":
                    break
                with self._lock:
                    start, self._seek_to = self._seek_to, None
                    self._anchor = self._paused_at = None  # the seek target is due at once
                    self._offset = None  # rebased: the first event after a seek is "now"
                if self._since is not None and start is not None:
                    start = max(start, self._since)
            with self._lock:
                if self._state in (RUNNING, PAUSED):
                    self._end_stretch()
                    self._state = FINISHED
        except ReplayError:
            with self._lock:
                self._state = FAILED
            raise
        finally:
            undelivered = self._sink.flush()
            self._count_sink_failures()
            with self._lock:
                self._end_stretch()
                if undelivered:
                    self._failures += undelivered
                if self._failures:
                    self._state = FAILED
                final = self._status()
            if self._progress is not None:
                self._progress(final)
        if final.delivery_failures:
            raise ReplayError(
                f"{final.delivery_failures} events were not delivered "
                f"(first error: {self._first_failure or 'undelivered at flush'})"
            )
        return final

    def _replay_from(self, start: int | None) -> str:
        """Send events from ``start``; returns "end", "stop" or "seek"."""
        for batch in self._batches(start):
            times = batch.column("event_time").to_numpy()
            records: Records | None = None
            first = 0  # row of ``batch`` at which ``records`` start
            i = 0
            while i < len(times):
                outcome = self._wait_until_due(int(times[i]))
                if outcome != "go":
                    return outcome
                j = self._due_end(times, i)
                if records is None:
                    # Encoded once per batch, from the first row due; the rebase shift is
                    # fixed by the first event sent after a start or a seek.
                    records, first = self._encode(batch.slice(i), int(times[i])), i
                self._send(records, i - first, j - first, int(times[j - 1]))
                i = j
        return "end"

    def _due_end(self, times: np.ndarray, i: int) -> int:
        """End (exclusive) of the run of rows from ``i`` that is due now, at most a chunk:
        everything due goes in one send, so pacing costs nothing per event."""
        limit = min(len(times), i + self._chunk)
        with self._lock:
            if self._speed is None or self._anchor is None:
                return limit
            wall, event = self._anchor
            due = event + (self._clock.now() + self._min_sleep - wall) * 1000 * self._speed
        return max(i + 1, min(limit, int(np.searchsorted(times, due, side="right"))))

    def _encode(self, batch: pa.RecordBatch, first_time: int) -> Records:
        if self._rebase and self._offset is None:
            self._offset = round(self._clock.now() * 1000) - first_time
        try:
            return encode_rows(batch, offset_ms=self._offset or 0)
        except RecordRejected as exc:
            raise ReplayError(f"{self.events_path}: {exc}") from exc

    def _batches(self, start: int | None) -> Iterator[pa.RecordBatch]:
        """Record batches with start <= event_time < until, skipping row groups by stats."""
        metadata = self._file.metadata
        time_col = self._file.schema_arrow.get_field_index("event_time")
        low = start if start is not None else -math.inf
        high = self._until if self._until is not None else math.inf
        groups = []
        for g in range(metadata.num_row_groups):
            stats = metadata.row_group(g).column(time_col).statistics
            if stats is not None and stats.has_min_max:
                if stats.max < low:
                    continue
                if stats.min >= high:
                    break
            groups.append(g)
        if not groups:
            return
        for batch in self._file.iter_batches(self._batch_rows, row_groups=groups):
            times = batch.column("event_time")
            keep = None
            if start is not None:
                keep = pc.greater_equal(times, start)
            if self._until is not None:
                before = pc.less(times, self._until)
                keep = before if keep is None else pc.and_(keep, before)
            selected = batch if keep is None else batch.filter(keep)
            if selected.num_rows:
                yield selected

    def _wait_until_due(self, event_time: int) -> str:
        """Sleep until ``event_time`` is due; "go", or "stop"/"seek" if told so meanwhile."""
        while True:
            self._report_progress()
            with self._lock:
                if self._failures or self._state == STOPPED:
                    return "stop"
                if self._seek_to is not None:
                    return "seek"
                now = self._clock.now()
                if self._state == PAUSED:
                    wait = self._max_sleep
                elif self._speed is None:
                    return "go"
                else:
                    if self._anchor is None:
                        self._anchor = (now, float(event_time))
                    wall, event = self._anchor
                    due = wall + (event_time - event) / 1000 / self._speed
                    wait = due - now
                    if wait <= self._min_sleep:
                        return "go"
                    wait = min(wait, self._max_sleep)
            self._clock.sleep(wait)

    def _send(self, records: Records, start: int, end: int, last_time: int) -> None:
        chunk = records if (start, end) == (0, len(records)) else records.slice(start, end)
        try:
            self._sink.send(chunk)
        except Exception as exc:
            # Whatever a sink raises is a delivery failure of the chunk: counted, and
            # raised by run().
            self._on_failure(exc, len(chunk))
            return
        with self._lock:
            self._sent += len(chunk)
            self._position = last_time
        self._count_sink_failures()

    def _count_sink_failures(self) -> None:
        """Take the sink's failures so far into the count (a delivery failure stops the run)."""
        failed, error = self._sink.failures()
        with self._lock:
            self._failures += failed - self._sink_failed
            self._sink_failed = failed
            if error is not None and self._first_failure is None:
                self._first_failure = error

    def _on_failure(self, error: BaseException, count: int) -> None:
        with self._lock:
            self._failures += count
            if self._first_failure is None:
                self._first_failure = error

    # --- bookkeeping -------------------------------------------------------------------

    def _event_clock(self, now: float) -> float | None:
        """The event time that pacing says is due at wall time ``now`` (lock held)."""
        if self._state == PAUSED:
            return self._paused_at
        if self._anchor is None or self._speed is None:
            return None
        wall, event = self._anchor
        return event + (now - wall) * 1000 * self._speed

    def _end_stretch(self) -> None:
        """Add the running time since the last start or resume (lock held)."""
        if self._stretch is not None:
            self._active += self._clock.now() - self._stretch
            self._stretch = None

    def _status(self) -> ReplayStatus:
        """The status (lock held)."""
        active = self._active
        if self._stretch is not None:
            active += self._clock.now() - self._stretch
        return ReplayStatus(
            state=self._state,
            position_ms=self._position,
            events_sent=self._sent,
            delivery_failures=self._failures,
            rate=self._sent / active if active > 0 else 0.0,
            speed=self._speed,
            due_ms=self._event_clock(self._clock.now())
            if self._state in (RUNNING, PAUSED)
            else None,
        )

    def _report_progress(self) -> None:
        """Call the progress callback (outside the lock: it may ask for the status)."""
        if self._progress is None:
            return
        with self._lock:
            now = self._clock.now()
            if now - self._last_progress < self._progress_interval:
                return
            self._last_progress = now
            status = self._status()
        self._progress(status)
