"""A small server-sent-events reader for `/recommend/stream`: used by the end-to-end
tests and the freshness benchmark, and handy from a shell (`python -m api.sse_client`).

Each received event is put on a queue with its arrival time, from a background thread,
so a caller can do other requests while the stream stays open.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class SseEvent:
    event: str
    data: Any
    received_at: float  # time.perf_counter() when the event's blank line arrived


class SseStream:
    def __init__(self, url: str, params: dict[str, Any], timeout: float = 30.0) -> None:
        self.events: queue.Queue[SseEvent] = queue.Queue()
        self._url, self._params, self._timeout = url, params, timeout
        self._stop = threading.Event()
        self.error: BaseException | None = None
        # The response's headers, once it has started (x-streamrec-pid names the process).
        self.headers: httpx.Headers | None = None
        self._thread = threading.Thread(target=self._read, name="sse-reader", daemon=True)

    def __enter__(self) -> SseStream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._thread.join(timeout=5)

    def stop(self) -> None:
        """Ask the reader to end at its next line (without waiting for it)."""
        self._stop.set()

    def _read(self) -> None:
        timeout = httpx.Timeout(self._timeout, read=None)
        try:
            with (
                httpx.Client(timeout=timeout) as client,
                client.stream("GET", self._url, params=self._params) as response,
            ):
                response.raise_for_status()
                self.headers = response.headers
                name, data = "message", []
                for line in response.iter_lines():
                    if self._stop.is_set():
                        return
                    if line.startswith("event:"):
                        name = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif line == "" and data:
                        payload = "\n".join(data)
                        try:
                            parsed: Any = json.loads(payload)
                        except json.JSONDecodeError:
                            parsed = payload
                        self.events.put(SseEvent(name, parsed, time.perf_counter()))
                        name, data = "message", []
        except httpx.HTTPError as exc:
            if not self._stop.is_set():
                self.error = exc

    def next(self, event: str = "recommendations", timeout: float = 10.0) -> SseEvent:
        """The next event of this name; raises TimeoutError (with any stream error)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {event!r} event within {timeout}s (error: {self.error})")
            try:
                received = self.events.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            if received.event == event:
                return received


def main() -> None:
    base = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
    user = sys.argv[2] if len(sys.argv) > 2 else "196"
    with SseStream(f"{base}/recommend/stream", {"user_id": user, "k": 5}) as stream:
        while True:
            received = stream.next(timeout=3600)
            items = [item["item_id"] for item in received.data["items"]]
            print(f"{time.strftime('%H:%M:%S')} {received.event}: {items}", flush=True)


if __name__ == "__main__":
    main()
