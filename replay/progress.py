"""A one-line progress display on stderr, without a progress-bar dependency.

On a terminal the line is rewritten in place; in a log file (not a TTY) a line is written
at most every ``log_interval`` seconds so that logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from replay.replayer import ReplayStatus
from streamrec.times import format_ms


def describe(status: ReplayStatus) -> str:
    speed = "max" if status.speed is None else f"{status.speed:g}x"
    position = format_ms(status.position_ms) if status.position_ms is not None else "-"
    failures = f", {status.delivery_failures:,} failed" if status.delivery_failures else ""
    return (
        f"replay {status.state}: {status.events_sent:,} events{failures}, "
        f"{status.rate:,.0f} ev/s, at {position}, speed {speed}"
    )


class ProgressLine:
    """Callable given to the Replayer as ``progress``; ``finish`` prints the final line."""

    def __init__(self, stream: TextIO | None = None, log_interval: float = 10.0) -> None:
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._log_interval = log_interval
        self._last = 0.0
        self._width = 0

    def __call__(self, status: ReplayStatus) -> None:
        text = describe(status)
        if self._tty:
            self._stream.write("\r" + text.ljust(self._width))
            self._width = len(text)
            self._stream.flush()
            return
        now = time.monotonic()
        if now - self._last >= self._log_interval:
            self._last = now
            self._stream.write(text + "\n")
            self._stream.flush()

    def finish(self, status: ReplayStatus) -> None:
        prefix = "\r" if self._tty else ""
        self._stream.write(prefix + describe(status).ljust(self._width) + "\n")
        self._stream.flush()
