"""One replay for several API processes, on the real Redis: two ``SharedReplayControl``s
stand for two processes of ``streamrec serve --workers 2`` (each over its own
``ReplayControl`` and in-memory sink). Whichever one a request reaches, the status and the
controls are those of the one replay, and its refusals come back as with one process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pandas as pd
import pytest

from api.replay_control import (
    BackwardSeek,
    NoReplay,
    ReplayConflict,
    ReplayControl,
    ReplayRequest,
    ReplayView,
)
from api.replay_shared import SharedReplayControl
from replay.replayer import ListSink, Sink
from streamrec.settings import Settings
from tests.unit.api.helpers import TINY_SEQUENCES, TINY_TITLES, write_log


class Sinks:
    def __init__(self) -> None:
        self.opened: list[ListSink] = []

    def __call__(self) -> tuple[Sink, object]:
        sink = ListSink()
        self.opened.append(sink)
        return sink, lambda: None


@pytest.fixture
async def pair(redis_settings: Settings) -> AsyncIterator[tuple[SharedReplayControl, ...]]:
    path = write_log(redis_settings.data_dir, TINY_SEQUENCES, titles=TINY_TITLES)
    events = path / "events.parquet"
    pd.read_parquet(events).sort_values("event_time", kind="stable").to_parquet(events, index=False)
    url = redis_settings.redis_connection_url or ""
    controls = tuple(
        SharedReplayControl(
            ReplayControl(redis_settings.data_dir, Sinks()),  # type: ignore[arg-type]
            url,
            redis_settings.topic_prefix,
        )
        for _ in range(2)
    )
    yield controls
    for control in controls:
        await control.close()


async def _state(control: SharedReplayControl, state: str, timeout: float = 5.0) -> ReplayView:
    async def poll() -> ReplayView:
        while True:
            view = await control.view()
            if view is not None and view.status.state == state:
                return view
            await asyncio.sleep(0.02)

    return await asyncio.wait_for(poll(), timeout)


async def _sent(control: SharedReplayControl, timeout: float = 5.0) -> ReplayView:
    async def poll() -> ReplayView:
        while True:
            view = await control.view()
            if view is not None and view.status.position_ms is not None:
                return view
            await asyncio.sleep(0.02)

    return await asyncio.wait_for(poll(), timeout)


async def test_the_replay_one_process_started_is_seen_and_controlled_from_another(
    pair: tuple[SharedReplayControl, SharedReplayControl],
) -> None:
    owner, other = pair
    assert await other.view() is None
    started = await owner.start(ReplayRequest(source="tiny", speed=0.001))
    await _state(owner, "running")

    # The other process knows it and refuses a second one, naming it.
    seen = await _state(other, "running")
    assert seen.run_id == started.run_id
    with pytest.raises(ReplayConflict, match=started.run_id):
        await other.start(ReplayRequest(source="tiny", speed=None))

    # Controls sent to the other process act on the owner's replay and answer its view.
    paused = await other.pause()
    assert paused.run_id == started.run_id and paused.status.state == "paused"
    assert (await owner.view()).status.state == "paused"  # type: ignore[union-attr]
    assert (await other.view()).status.state == "paused"  # type: ignore[union-attr]
    faster = await other.set_speed(2.5)
    assert faster.status.speed == 2.5
    resumed = await other.resume()
    assert resumed.status.state == "running"
    # The first event went at the start; seeking back to it is the owner's refusal,
    # which comes back as the same error.
    first = started.log.first_ms
    assert (await _sent(owner)).status.position_ms == first
    with pytest.raises(BackwardSeek):
        await other.seek(first)
    assert (await other.seek(first + 1)).run_id == started.run_id

    stopped = await other.stop()
    assert stopped.status.state == "stopped"
    assert (await owner.view()).status.state == "stopped"  # type: ignore[union-attr]
    with pytest.raises(NoReplay):
        await other.pause()

    # Ended, the replay no longer holds the service: the other process starts the next one.
    again = await other.start(ReplayRequest(source="tiny", speed=None))
    assert again.run_id != started.run_id
    finished = await _state(owner, "finished")
    assert finished.run_id == again.run_id
    assert finished.status.events_sent == sum(len(items) for items in TINY_SEQUENCES.values())


async def test_controls_with_no_replay_are_refused_everywhere(
    pair: tuple[SharedReplayControl, SharedReplayControl],
) -> None:
    for control in pair:
        with pytest.raises(NoReplay):
            await control.pause()
        with pytest.raises(NoReplay):
            await control.stop()
