"""The worker's Faust app."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from faust.types import TP

from streamrec.settings import Settings
from streams.app import QuietMonitor, create_app


def test_the_monitor_keeps_only_what_faust_reads_per_event(tmp_path: Path) -> None:
    app = create_app(Settings(state_dir=tmp_path, topic_prefix="t."))
    tp = TP("t.interactions", 0)
    stream: Any = object()
    assert isinstance(app.monitor, QuietMonitor)  # the one Faust adds to its sensors at start
    assert app.monitor.on_stream_event_in(tp, 3, stream, cast(Any, None)) is None
    assert tp in app.monitor.stream_inbound_time  # Faust's stalled-stream warning reads it
    assert app.monitor.events_total == 0  # no per-event statistics
