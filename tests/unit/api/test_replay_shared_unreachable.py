"""A shared replay control whose Redis does not answer: a clear error the routes turn into
a 503, never a 500 (the in-memory sink; nothing listens on the port)."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.replay_control import ReplayControl, ReplayRequest
from api.replay_shared import ReplayUnreachable, SharedReplayControl
from replay.replayer import ListSink
from streamrec.infra.processes import free_port


async def test_no_redis_is_a_clear_error(tmp_path: Path) -> None:
    control = SharedReplayControl(
        ReplayControl(tmp_path, lambda: (ListSink(), lambda: None)),
        f"redis://127.0.0.1:{free_port()}/0",
        "t.",
    )
    try:
        with pytest.raises(ReplayUnreachable, match="Redis"):
            await control.view()
        with pytest.raises(ReplayUnreachable, match="Redis"):
            await control.pause()
        with pytest.raises(ReplayUnreachable, match="Redis"):
            await control.start(ReplayRequest(source="tiny", speed=None))
    finally:
        await control.close()
