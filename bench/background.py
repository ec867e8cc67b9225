"""What runs beside a load benchmark: a second replay of a log, so the worker folds events
while the API is measured, at a chosen average rate; and open SSE streams.

    with background_replay(settings, "movielens-100k", rate=1000):
        ...  # the measurement

The replay is ``streamrec replay SOURCE --speed X --rebase-now`` (the operator's command),
at the speed at which the log averages ``rate`` events per second: a replayed log keeps
its bursts, so the instantaneous rate varies around that mean.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from api.sse_client import SseStream
from streamrec.infra.processes import settings_env
from streamrec.paths import REPO_ROOT, dataset_events
from streamrec.settings import Settings


def speed_for_rate(data_dir: Path, source: str, rate: float) -> float:
    """The replay speed (times real time) at which the log averages ``rate`` events/s."""
    times = pq.read_table(dataset_events(data_dir, source), columns=["event_time"]).column(0)
    span_s = (pc.max(times).as_py() - pc.min(times).as_py()) / 1000  # event_time: epoch ms
    if span_s <= 0:
        raise SystemExit(f"the log {source!r} spans no time; give a speed instead")
    return rate * span_s / len(times)


@contextmanager
def open_streams(url: str, users: int, count: int) -> Iterator[list[SseStream]]:
    """``count`` streams of ``/recommend/stream`` for users 1..``users`` held open (each
    gets its list at connect and then whenever its user's row changes)."""
    rng = random.Random(5)
    streams = [
        SseStream(f"{url}/recommend/stream", {"user_id": str(rng.randint(1, users)), "k": 10})
        for _ in range(count)
    ]
    for stream in streams:
        stream.__enter__()
    try:
        for stream in streams:
            stream.next(timeout=30)  # the list sent at connect: the stream is open
        yield streams
    finally:
        for stream in streams:
            stream.stop()


@contextmanager
def background_replay(settings: Settings, source: str, *, speed: float) -> Iterator[None]:
    """``streamrec replay`` of ``source`` at ``speed`` until the context closes (nothing
    when ``speed`` is 0). The log ends (MovieLens-100K at 1,000 events/s after about 100 s):
    the replay is started again each time it does, so a measurement of any length has its
    background throughout."""
    if speed <= 0:
        yield
        return
    command = [sys.executable, "-m", "streamrec.cli", "replay", source, "--speed", str(speed)]
    command.append("--rebase-now")

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=settings_env(settings),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    process = start()
    stopping = threading.Event()

    def keep_running() -> None:
        nonlocal process
        while not stopping.wait(0.5):
            if process.poll() is not None and not stopping.is_set():
                if process.returncode != 0:
                    print(f"background replay exited {process.returncode}", file=sys.stderr)
                    return
                process = start()

    time.sleep(2)  # its producer connected and sending
    if process.poll() is not None:
        raise SystemExit(f"the background replay of {source!r} ended at once")
    watcher = threading.Thread(target=keep_running, name="background-replay", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stopping.set()
        watcher.join()
        process.terminate()
        process.wait(30)
