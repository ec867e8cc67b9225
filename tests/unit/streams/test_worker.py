"""The worker process's start-up: what it imports (``streams.worker``)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

# Everything ``run_worker`` builds before Faust runs, on a SQLite online store (no Redis),
# in a fresh interpreter; prints the torch modules imported and the views the sink sees.
_BUILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    from streams.worker import keep_torch_out

    keep_torch_out()
    from streamrec.infra.feast_store import apply_definitions, open_store
    from streamrec.settings import Settings
    from streams.agents import attach
    from streams.app import create_app
    from streams.sinks import FeastFeatureSink, InMemoryChangeNotifier

    tmp = Path(sys.argv[1])
    settings = Settings(redis_url="none", data_dir=tmp / "data", state_dir=tmp / "state")
    store = open_store(settings)
    apply_definitions(store)
    sink = FeastFeatureSink(store)
    attach(create_app(settings), settings, sink, InMemoryChangeNotifier())
    print(sorted(m for m, module in sys.modules.items() if m.startswith("torch") and module))
    print(sorted(fv.name for fv in store.list_feature_views()))
    """
)


def test_the_worker_builds_its_feast_sink_and_agents_without_importing_torch(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _BUILD, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    torch_modules, views = done.stdout.strip().splitlines()[-2:]
    assert torch_modules == "[]"
    assert "item_stats" in views and "user_recent" in views


def _attached_app(**settings: Any) -> Any:
    """The worker's app (topic prefix "t.") with its agents attached, on in-memory sinks."""
    from streamrec.settings import Settings
    from streams.agents import attach
    from streams.app import create_app
    from streams.sinks import InMemoryChangeNotifier, InMemoryFeatureSink

    built = Settings(topic_prefix="t.", **settings)
    app = create_app(built)
    attach(app, built, InMemoryFeatureSink(), InMemoryChangeNotifier())
    return app


def test_the_item_agent_buffers_at_most_worker_item_buffer_decoded_messages(
    tmp_path: Path,
) -> None:
    app = _attached_app(state_dir=tmp_path, worker_item_buffer=7)
    buffers = {
        name: agent.channel.maxsize
        for agent in app.agents.values()
        for name in agent.channel.topics  # type: ignore[attr-defined]
    }
    assert buffers["t.worker-item-activity"] == 7
    # the other topics keep Faust's buffer: their records are one event each
    assert buffers["t.interactions"] is None


def test_the_changelog_topics_made_before_the_start_are_those_faust_declares(
    tmp_path: Path,
) -> None:
    from streams.worker import changelog_topics

    app = _attached_app(state_dir=tmp_path, topic_partitions=5)
    found = {name: (partitions, config) for name, partitions, config in changelog_topics(app)}
    assert (
        set(found)
        == {table.changelog_topic.get_topic_name() for table in app.tables.values()}
        == {
            f"t.worker-{name}-changelog"
            for name in ("user_recent", "item_stats", "served_requests")
        }
    )
    for partitions, config in found.values():
        # Each changelog has its source topics' partitions (Faust refuses a mismatch) and is
        # compacted: a table's changelog keeps each key's latest state.
        assert partitions == 5
        assert config["cleanup.policy"] == "compact"


def test_the_item_agent_has_its_own_batch_window_and_bound(tmp_path: Path) -> None:
    """The user side's window bounds how late an SSE update comes; the item side's only
    how many times a hot item's state and row are rewritten, so it waits longer, with
    fewer messages a batch (on a backlog each is a whole batch's entries)."""
    import asyncio

    class Stream:
        """Records the batch sizes and windows an agent asks for; has no events."""

        def __init__(self) -> None:
            self.asked: list[tuple[int, float]] = []

        async def take_events(self, max_: int, within: float) -> AsyncIterator[list[Any]]:
            self.asked.append((max_, within))
            for batch in ():
                yield batch

    app = _attached_app(
        state_dir=tmp_path,
        worker_batch_size=300,
        worker_batch_seconds=0.07,
        worker_item_batch_seconds=0.6,
        worker_item_batch_max=40,
    )
    asked = {}
    for name, agent in app.agents.items():
        stream = Stream()
        asyncio.run(agent.fun(stream))
        asked[name.rsplit(".", 1)[-1]] = stream.asked
    assert asked == {
        "fold_interactions": [(300, 0.07)],
        "fold_clicks": [(300, 0.07)],
        "fold_items": [(40, 0.6)],
    }
