"""The replayer: pacing with a fake clock, controls, rebasing, delivery failures."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from replay.dataset import EVENTS_SCHEMA
from replay.encoding import Records
from replay.replayer import ListSink, Replayer, ReplayError, ReplayStatus
from streams.events import Interaction

from .conftest import FakeClock

T0 = 1_000_000_000_000  # 2001-09-09, inside the event contract's range


def write_log(path: Path, offsets_ms: list[int], row_group_size: int = 3) -> Path:
    """A prepared log with one event per offset (ms after T0), ids e0, e1, ..."""
    n = len(offsets_ms)
    table = pa.table(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "event_time": [T0 + t for t in offsets_ms],
            "user_id": [f"u{i % 3}" for i in range(n)],
            "item_id": [f"i{i}" for i in range(n)],
            "action": ["rate"] * n,
            "rating": [float(i % 5) if i % 4 else None for i in range(n)],
        },
        schema=EVENTS_SCHEMA,
    )
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return write_log(tmp_path / "events.parquet", [0, 1000, 1000, 3000, 10_000])


def sent_offsets(sink: ListSink, clock: FakeClock) -> list[float]:
    return [round(t - clock.start, 6) for t in sink.sent_at]


@pytest.mark.parametrize(
    ("speed", "expected"),
    [(2.0, [0, 0.5, 0.5, 1.5, 5.0]), (10.0, [0, 0.1, 0.1, 0.3, 1.0]), (1.0, [0, 1, 1, 3, 10])],
)
def test_pacing(log: Path, clock: FakeClock, speed: float, expected: list[float]) -> None:
    sink = ListSink(clock)
    status = Replayer(log, sink, speed=speed, clock=clock).run()
    assert sent_offsets(sink, clock) == pytest.approx(expected, abs=0.0021)
    assert status.state == "finished" and status.events_sent == 5
    assert status.rate == pytest.approx(5 / expected[-1], rel=0.01)


def test_events_match_the_log(log: Path, clock: FakeClock) -> None:
    sink = ListSink()
    Replayer(log, sink, clock=clock).run()
    first, second = sink.events[0], sink.events[1]
    assert isinstance(first, Interaction)
    assert (first.event_id, first.event_time, first.user_id, first.item_id) == (
        "e0",
        T0,
        "u0",
        "i0",
    )
    assert first.source == "replay" and first.action == "rate"
    assert first.rating is None and second.rating == 1.0


def test_max_speed_never_sleeps(log: Path, clock: FakeClock) -> None:
    sink = ListSink()
    status = Replayer(log, sink, speed=None, clock=clock).run()
    assert clock.sleeps == []
    assert [e.event_id for e in sink.events] == ["e0", "e1", "e2", "e3", "e4"]
    assert status.position_ms == T0 + 10_000


def test_high_speed_batches_sleeps(tmp_path: Path, clock: FakeClock) -> None:
    log = write_log(tmp_path / "dense.parquet", list(range(0, 10_000)), row_group_size=4096)
    sink = ListSink(clock)
    Replayer(log, sink, speed=1000.0, clock=clock).run()
    assert len(sink.events) == 10_000
    assert len(clock.sleeps) < 20  # about one sleep per 2 ms of wall time, not per event
    assert clock.time - clock.start == pytest.approx(0.010, abs=0.0025)


def test_pause_and_resume_keep_the_remaining_gap(log: Path, clock: FakeClock) -> None:
    sink = ListSink(clock)
    replayer = Replayer(log, sink, speed=1.0, clock=clock)
    seen: list[ReplayStatus] = []
    clock.at(1.5, replayer.pause)
    clock.at(2.0, lambda: seen.append(replayer.status()))
    clock.at(11.5, replayer.resume)
    status = replayer.run()
    # event 3 (t=3 s) was 1.5 s away when paused at 1.5 s: it goes 1.5 s after the resume
    assert sent_offsets(sink, clock) == pytest.approx([0, 1, 1, 13, 20], abs=0.0021)
    assert seen[0].state == "paused" and seen[0].events_sent == 3
    assert status.rate == pytest.approx(5 / 10, rel=0.02)  # the paused 10 s do not count


def test_set_speed_mid_gap(log: Path, clock: FakeClock) -> None:
    sink = ListSink(clock)
    replayer = Replayer(log, sink, speed=1.0, clock=clock)
    clock.at(5.0, lambda: replayer.set_speed(10.0))  # 5 s of event time left to event 4
    replayer.run()
    assert sent_offsets(sink, clock)[-1] == pytest.approx(5.5, abs=0.0021)
    assert replayer.status().speed == 10.0


def test_seek_forward_and_backward(tmp_path: Path, clock: FakeClock) -> None:
    log = write_log(tmp_path / "events.parquet", [i * 1000 for i in range(10)])
    replayer: Replayer

    class SeekingSink(ListSink):
        def send(self, records: Records) -> None:
            super().send(records)
            event = self.events[-1]
            if event.event_id == "e1" and len(self.records) == 2:
                replayer.seek(T0 + 6500)  # forward, between events: next is e7
            if event.event_id == "e8" and len(self.records) == 4:
                replayer.seek(T0 + 2000)  # backward, exactly on e2

    sink = SeekingSink()
    # One event per send, so that a seek can land between any two events.
    replayer = Replayer(log, sink, speed=None, clock=clock, chunk_events=1)
    replayer.run()
    assert [e.event_id for e in sink.events] == [
        "e0",
        "e1",
        "e7",
        "e8",
        "e2",
        "e3",
        "e4",
        "e5",
        "e6",
        "e7",
        "e8",
        "e9",
    ]


def test_seek_while_paced_sends_the_target_at_once(tmp_path: Path, clock: FakeClock) -> None:
    log = write_log(tmp_path / "events.parquet", [0, 100_000, 200_000, 300_000])
    sink = ListSink(clock)
    replayer = Replayer(log, sink, speed=1.0, clock=clock)
    clock.at(10.0, lambda: replayer.seek(T0 + 200_000))
    replayer.run()
    assert [e.event_id for e in sink.events] == ["e0", "e2", "e3"]
    assert sent_offsets(sink, clock) == pytest.approx([0, 10, 110], abs=0.06)


def test_rebase_now(log: Path) -> None:
    clock = FakeClock(start=1_700_000_000.0)
    sink = ListSink(clock)
    Replayer(log, sink, speed=None, rebase_now=True, clock=clock).run()
    times = [e.event_time for e in sink.events]
    assert times == [1_700_000_000_000 + t for t in (0, 1000, 1000, 3000, 10_000)]
    ids = [e.event_id for e in sink.events]
    assert len(set(ids)) == 5 and not set(ids) & {"e0", "e1", "e2", "e3", "e4"}
    again = ListSink()
    Replayer(log, again, rebase_now=True, clock=FakeClock(start=1_700_000_000.0)).run()
    assert [e.event_id for e in again.events] == ids  # same shift, same ids


def test_since_until(tmp_path: Path, clock: FakeClock) -> None:
    log = write_log(tmp_path / "events.parquet", [i * 1000 for i in range(12)])
    sink = ListSink()
    Replayer(log, sink, since_ms=T0 + 3500, until_ms=T0 + 8000, clock=clock).run()
    assert [e.event_id for e in sink.events] == ["e4", "e5", "e6", "e7"]


class FailingSink(ListSink):
    """Delivery of the third event fails, as a broker rejection would."""

    def failures(self) -> tuple[int, BaseException | None]:
        if len(self.records) >= 3:
            return 1, RuntimeError("broker said no")
        return 0, None


def test_delivery_failure_stops_and_raises(tmp_path: Path, clock: FakeClock) -> None:
    log = write_log(tmp_path / "events.parquet", [i * 1000 for i in range(10)])
    replayer = Replayer(log, FailingSink(), clock=clock, chunk_events=1)
    with pytest.raises(ReplayError, match="1 events were not delivered.*broker said no"):
        replayer.run()
    status = replayer.status()
    assert status.state == "failed" and status.delivery_failures == 1
    assert status.events_sent == 3  # stopped at once, not after the whole log


def test_undelivered_at_flush_raises(log: Path, clock: FakeClock) -> None:
    class LossySink(ListSink):
        def flush(self) -> int:
            return 2

    with pytest.raises(ReplayError, match="2 events were not delivered"):
        Replayer(log, LossySink(), clock=clock).run()


def test_controls_from_another_thread(tmp_path: Path) -> None:
    """The real clock: pause holds events back, stop ends the run early."""
    log = write_log(tmp_path / "events.parquet", [i * 20 for i in range(500)], 100)
    sink = ListSink()
    replayer = Replayer(log, sink, speed=1.0, max_sleep=0.01)
    worker = threading.Thread(target=replayer.run)
    worker.start()
    time.sleep(0.2)
    replayer.pause()
    time.sleep(0.05)
    paused_count = len(sink.events)
    time.sleep(0.2)
    assert len(sink.events) == paused_count and replayer.status().state == "paused"
    replayer.resume()
    time.sleep(0.2)
    assert len(sink.events) > paused_count
    replayer.stop()
    worker.join(2)
    assert not worker.is_alive()
    status = replayer.status()
    assert status.state == "stopped" and 0 < status.events_sent < 500


def test_progress_and_errors(log: Path, clock: FakeClock, tmp_path: Path) -> None:
    reports: list[ReplayStatus] = []
    replayer = Replayer(
        log, ListSink(), speed=1.0, clock=clock, progress=reports.append, progress_interval=2.0
    )
    replayer.run()
    assert 3 <= len(reports) <= 8 and reports[-1].state == "finished"
    with pytest.raises(ReplayError, match="runs once"):
        replayer.run()
    with pytest.raises(ValueError, match="speed"):
        replayer.set_speed(0)
    with pytest.raises(ReplayError, match="no prepared event log"):
        Replayer(tmp_path / "missing.parquet", ListSink())
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(ReplayError, match="not a readable Parquet log"):
        Replayer(tmp_path / "junk.parquet", ListSink())


def test_a_sink_that_raises_fails_the_chunk(tmp_path: Path, clock: FakeClock) -> None:
    class RaisingSink(ListSink):
        def send(self, records: Records) -> None:
            raise OSError("disk full")

    log = write_log(tmp_path / "events.parquet", [i * 1000 for i in range(10)])
    replayer = Replayer(log, RaisingSink(), clock=clock, chunk_events=4)
    with pytest.raises(ReplayError, match="4 events were not delivered.*disk full"):
        replayer.run()
    assert replayer.status().events_sent == 0


def test_a_row_outside_the_contract_fails_the_replay(tmp_path: Path, clock: FakeClock) -> None:
    log = write_log(tmp_path / "events.parquet", [0, 1000])
    table = pq.read_table(log).to_pylist()
    table[1]["action"] = "like"
    pq.write_table(pa.Table.from_pylist(table, schema=EVENTS_SCHEMA), log)
    replayer = Replayer(log, ListSink(), clock=clock)
    with pytest.raises(ReplayError, match="'e1' is not a valid Interaction.*action"):
        replayer.run()
    assert replayer.status().state == "failed"
