"""Helpers for the API tests: a tiny event log and an app running over in-memory adapters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
from fastapi import FastAPI

from api.adapters.memory_changes import InMemoryChangeFeed
from api.adapters.memory_features import InMemoryFeatureReader
from api.adapters.memory_sink import InMemoryEventSink
from api.deps import Services
from api.main import create_app
from api.replay_control import SinkFactory
from streamrec.settings import Settings

BASE_TIME = 1_700_000_000_000


def write_log(
    data_dir: Path,
    sequences: dict[str, list[str]],
    *,
    titles: dict[str, str] | None = None,
    name: str = "tiny",
) -> Path:
    """An event log where each user interacted with their items in the order given."""
    rows = [
        {
            "event_id": f"{user}-{step}",
            "event_time": BASE_TIME + step * 1000,
            "user_id": user,
            "item_id": item,
            "action": "view",
            "rating": None,
        }
        for user, items in sequences.items()
        for step, item in enumerate(items)
    ]
    folder = data_dir / "datasets" / name
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).astype({"rating": "float64"}).to_parquet(folder / "events.parquet")
    if titles is not None:
        pd.DataFrame(
            {"item_id": list(titles), "title": list(titles.values()), "categories": ""}
        ).to_parquet(folder / "items.parquet")
    return folder


# In the tiny log: "a" and "b" always go together, "c" and "d" too; "p" is the most
# popular item and shares no window with "a".
TINY_SEQUENCES = {
    "u1": ["a", "b", "p"],
    "u2": ["a", "b", "x"],
    "u3": ["c", "d"],
    "u4": ["c", "d"],
    "u5": ["p", "q"],
    "u6": ["p", "q"],
    "u7": ["p"],
    "u8": ["p"],
}
TINY_TITLES = {"a": "Alien", "b": "Blade Runner", "c": "Casablanca"}


@dataclass
class Adapters:
    features: InMemoryFeatureReader
    sink: InMemoryEventSink
    changes: InMemoryChangeFeed


@dataclass
class RunningApp:
    app: FastAPI
    client: httpx.AsyncClient
    adapters: Adapters

    @property
    def services(self) -> Services:
        return self.app.state.services


@asynccontextmanager
async def running_app(
    settings: Settings,
    adapters: Adapters,
    *,
    wait_for_index: bool = True,
    replay_sink: SinkFactory | None = None,
    freeze_heap: bool = False,
) -> AsyncIterator[RunningApp]:
    app = create_app(
        settings,
        features=adapters.features,
        sink=adapters.sink,
        changes=adapters.changes,
        replay_sink=replay_sink,
        freeze_heap=freeze_heap,
    )
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        if wait_for_index:
            await asyncio.wait_for(services.state.index_built.wait(), 10)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield RunningApp(app, client, adapters)


@dataclass
class SseEvent:
    event: str
    data: str
    id: str | None


class SseConnection:
    """A client of a streaming endpoint, speaking ASGI to the app directly.

    httpx's ASGI transport returns only once a response is complete, which an endless
    event stream never is; this reads body chunks as they are sent and can hang up.
    """

    def __init__(self, app: FastAPI, path: str, query: str) -> None:
        self._app = app
        self._scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [(b"host", b"test"), (b"accept", b"text/event-stream")],
            "client": ("127.0.0.1", 50000),
            "server": ("test", 80),
        }
        self._messages: asyncio.Queue[dict] = asyncio.Queue()
        self._hang_up = asyncio.Event()
        self._request_sent = False
        self._buffer = ""
        self.status: int | None = None
        self.comments: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def _receive(self) -> dict:
        if not self._request_sent:
            self._request_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._hang_up.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict) -> None:
        await self._messages.put(message)

    async def __aenter__(self) -> SseConnection:
        self._task = asyncio.create_task(self._app(self._scope, self._receive, self._send))
        start = await asyncio.wait_for(self._messages.get(), 5)
        assert start["type"] == "http.response.start"
        self.status = start["status"]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._hang_up.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, 5)

    async def next_event(self, timeout: float = 5.0) -> SseEvent:
        """The next event with data; comment lines (pings) are kept in ``comments``."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            separator = self._buffer.find("\r\n\r\n")
            if separator >= 0:
                block, self._buffer = self._buffer[:separator], self._buffer[separator + 4 :]
                fields: dict[str, str] = {}
                for line in block.split("\r\n"):
                    if line.startswith(":"):
                        self.comments.append(line[1:].strip())
                        continue
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
                if "data" in fields:
                    return SseEvent(
                        fields.get("event", "message"), fields["data"], fields.get("id")
                    )
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            message = await asyncio.wait_for(self._messages.get(), max(remaining, 0))
            if message["type"] == "http.response.body":
                self._buffer += message.get("body", b"").decode()
