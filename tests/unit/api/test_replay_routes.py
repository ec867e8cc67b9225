"""/admin/replay: the CLI's replayer run by the API as a managed task (in-memory sink)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from pydantic import SecretStr

from api.replay_control import log_range
from replay.replayer import ListSink, Sink
from streamrec.settings import Settings
from tests.unit.api.helpers import (
    BASE_TIME,
    TINY_SEQUENCES,
    TINY_TITLES,
    Adapters,
    RunningApp,
    running_app,
    write_log,
)

API_KEY = "0123456789abcdef-test-key"
HEADERS = {"X-API-Key": API_KEY}
TINY_EVENTS = sum(len(items) for items in TINY_SEQUENCES.values())


class Sinks:
    """Opens a ListSink per replay and remembers which were closed."""

    def __init__(self) -> None:
        self.opened: list[ListSink] = []
        self.closed = 0

    def __call__(self) -> tuple[Sink, Callable[[], None]]:
        sink = ListSink()
        self.opened.append(sink)
        return sink, self._close

    def _close(self) -> None:
        self.closed += 1


def _write_sorted_log(data_dir: Path) -> None:
    """The tiny log in event-time order, as `data prepare` writes every log."""
    path = write_log(data_dir, TINY_SEQUENCES, titles=TINY_TITLES) / "events.parquet"
    frame = pd.read_parquet(path).sort_values("event_time", kind="stable")
    frame.to_parquet(path, index=False)


@pytest.fixture
def keyed(settings: Settings) -> Settings:
    _write_sorted_log(settings.data_dir)
    return settings.model_copy(update={"api_key": SecretStr(API_KEY)})


async def _wait_state(api: RunningApp, state: str, timeout: float = 5.0) -> dict:
    async def poll() -> dict:
        while True:
            body = (await api.client.get("/admin/replay", headers=HEADERS)).json()
            if body["state"] == state:
                return body
            await asyncio.sleep(0.02)

    return await asyncio.wait_for(poll(), timeout)


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)


async def test_replay_routes_need_the_api_key(keyed: Settings, adapters: Adapters) -> None:
    async with running_app(keyed, adapters, replay_sink=Sinks()) as api:
        assert (await api.client.get("/admin/replay")).status_code == 401
        started = await api.client.post(
            "/admin/replay", json={"source": "tiny"}, headers={"X-API-Key": "wrong-key-123456"}
        )
        assert started.status_code == 403


async def test_a_replay_at_max_speed_sends_the_whole_log_and_finishes(
    keyed: Settings, adapters: Adapters
) -> None:
    sinks = Sinks()
    async with running_app(keyed, adapters, replay_sink=sinks) as api:
        assert (await api.client.get("/admin/replay", headers=HEADERS)).json()["state"] == "idle"
        started = await api.client.post(
            "/admin/replay", json={"source": "tiny", "speed": "max"}, headers=HEADERS
        )
        assert started.status_code == 202, started.text
        body = await _wait_state(api, "finished")
        assert body["events_sent"] == TINY_EVENTS
        assert body["log"]["events"] == TINY_EVENTS
        assert body["log"]["first_ms"] == BASE_TIME
        assert body["position_ms"] == body["log"]["last_ms"]
        assert [e.source for e in sinks.opened[0].events] == ["replay"] * TINY_EVENTS
        # The task closes the sink (the producer, flushed) once the replayer returns.
        await asyncio.wait_for(_until(lambda: sinks.closed == 1), 5)
        # A finished replay does not block the next one.
        again = await api.client.post(
            "/admin/replay", json={"source": "tiny", "speed": "max"}, headers=HEADERS
        )
        assert again.status_code == 202
        assert again.json()["run_id"] != body["run_id"]


async def test_one_replay_at_a_time_and_its_controls(keyed: Settings, adapters: Adapters) -> None:
    sinks = Sinks()
    async with running_app(keyed, adapters, replay_sink=sinks) as api:
        # The tiny log spans 2 s of event time; at 0.01x that is minutes: it stays running.
        started = await api.client.post(
            "/admin/replay", json={"source": "tiny", "speed": 0.01}, headers=HEADERS
        )
        run_id = started.json()["run_id"]
        # The first instant's events go at once; the next is due 100 s later.
        await asyncio.wait_for(_until(lambda: len(sinks.opened[0].events) > 0), 5)
        second = await api.client.post(
            "/admin/replay", json={"source": "tiny", "speed": "max"}, headers=HEADERS
        )
        assert second.status_code == 409
        assert run_id in second.json()["detail"]

        paused = await api.client.post("/admin/replay/pause", headers=HEADERS)
        assert paused.json()["state"] == "paused"
        resumed = await api.client.post("/admin/replay/resume", headers=HEADERS)
        assert resumed.json()["state"] == "running"
        faster = await api.client.post("/admin/replay/speed", json={"speed": 2.5}, headers=HEADERS)
        assert faster.json()["speed"] == 2.5

        # Seek past everything but the last second: only those events follow, at max speed.
        seek = await api.client.post(
            "/admin/replay/seek", json={"to": (BASE_TIME + 2000) / 1000}, headers=HEADERS
        )
        assert seek.status_code == 200
        # Back to the start without rebase_now would send the same facts again: refused.
        back = await api.client.post(
            "/admin/replay/seek", json={"to": BASE_TIME / 1000}, headers=HEADERS
        )
        assert back.status_code == 409 and "rebase_now" in back.json()["detail"]
        await api.client.post("/admin/replay/speed", json={"speed": "max"}, headers=HEADERS)
        done = await _wait_state(api, "finished")
        sent = sinks.opened[0].events
        assert done["events_sent"] == len(sent)
        late = [e for e in sent if e.event_time >= BASE_TIME + 2000]
        assert len(late) == sum(len(items) >= 3 for items in TINY_SEQUENCES.values())

        nothing = await api.client.post("/admin/replay/pause", headers=HEADERS)
        assert nothing.status_code == 409


async def test_shutdown_stops_a_running_replay_and_closes_its_sink(
    keyed: Settings, adapters: Adapters
) -> None:
    sinks = Sinks()
    async with running_app(keyed, adapters, replay_sink=sinks) as api:
        await api.client.post(
            "/admin/replay", json={"source": "tiny", "speed": 0.001}, headers=HEADERS
        )
        control = api.app.state.replay
    view = control.view()
    assert view is not None and view.status.state == "stopped"
    assert sinks.closed == 1


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"source": "nope"}, 404),
        ({"source": "../etc"}, 422),
        ({"source": "tiny", "speed": 0}, 422),
        ({"source": "tiny", "speed": "fast"}, 422),
        ({"source": "tiny", "since": "yesterday"}, 422),
        ({"source": "tiny", "surprise": 1}, 422),
    ],
)
async def test_bad_starts_are_refused(
    keyed: Settings, adapters: Adapters, body: dict, status: int
) -> None:
    async with running_app(keyed, adapters, replay_sink=Sinks()) as api:
        response = await api.client.post("/admin/replay", json=body, headers=HEADERS)
        assert response.status_code == status, response.text


def test_log_range_reads_the_extent_of_a_prepared_log(tmp_path: Path) -> None:
    _write_sorted_log(tmp_path)
    extent = log_range(tmp_path, "tiny")
    assert (extent.first_ms, extent.last_ms, extent.events) == (
        BASE_TIME,
        BASE_TIME + 2000,
        TINY_EVENTS,
    )
