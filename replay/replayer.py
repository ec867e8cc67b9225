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
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from streams.events import Interaction

# Namespace of the ids of rebased events: "event X shifted by N ms" is a new, stable id.
REBASE_NAMESPACE = uuid.UUID("6f0d4c2e-7f7b-4f59-9a57-2f1b1d1b9a11")
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
    """Where events go. ``send`` may return a future that fails if delivery fails."""

    def send(self, event: Interaction) -> Future[Any] | None: ...

    def flush(self) -> int:
        """Wait for outstanding deliveries; return how many are still undelivered."""
        ...


class ListSink:
    """In-memory sink for tests and dry runs; remembers when (by ``clock``) each was sent."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.events: list[Interaction] = []
        self.sent_at: list[float] = []
        self._clock = clock

    def send(self, event: Interaction) -> Future[Any] | None:
        self.events.append(event)
        if self._clock is not None:
            self.sent_at.append(self._clock.now())
        return None

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
        self._sink = sink
        self._since, self._until = since_ms, until_ms
        self._rebase = rebase_now
        self._clock: Clock = clock or SystemClock()
        self._progress = progress
        self._progress_interval = progress_interval
        self._batch_rows = batch_rows
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
        """Replay until the log ends or ``stop``; raise ReplayError if deliveries failed."""
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
        finally:
            undelivered = self._sink.flush()
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
            times = batch.column("event_time").to_pylist()
            ids = batch.column("event_id").to_pylist()
            users = batch.column("user_id").to_pylist()
            items = batch.column("item_id").to_pylist()
            actions = batch.column("action").to_pylist()
            ratings = batch.column("rating").to_pylist()
            for i, event_time in enumerate(times):
                outcome = self._wait_until_due(event_time)
                if outcome != "go":
                    return outcome
                self._send(ids[i], event_time, users[i], items[i], actions[i], ratings[i])
        return "end"

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
            times = batch.column("event_time").to_numpy()
            selected = batch.filter(pa.array((times >= low) & (times < high)))
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

    def _send(
        self,
        event_id: str,
        event_time: int,
        user: str,
        item: str,
        action: str,
        rating: float | None,
    ) -> None:
        if self._rebase:
            if self._offset is None:
                self._offset = round(self._clock.now() * 1000) - event_time
            if self._offset:
                event_id = uuid.uuid5(REBASE_NAMESPACE, f"{event_id}@{self._offset}").hex
            sent_time = event_time + self._offset
        else:
            sent_time = event_time
        event = Interaction.model_validate(
            {
                "event_id": event_id,
                "event_time": sent_time,
                "user_id": user,
                "item_id": item,
                "action": action,
                "rating": rating,
                "source": "replay",
            }
        )
        try:
            future = self._sink.send(event)
        except Exception as exc:
            # Whatever a sink raises is a delivery failure: counted, and raised by run().
            self._on_failure(exc)
            return
        if future is not None:
            future.add_done_callback(self._on_done)
        with self._lock:
            self._sent += 1
            self._position = event_time

    def _on_done(self, future: Future[Any]) -> None:
        error = future.exception()
        if error is not None:
            self._on_failure(error)

    def _on_failure(self, error: BaseException) -> None:
        with self._lock:
            self._failures += 1
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
