"""A whole streamrec stack for a benchmark: fresh topics, the log replayed, worker and API.

Needs the services (`streamrec services up`) and a prepared log (`streamrec data prepare`).
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from streamrec.infra.lag import wait_until_caught_up
from streamrec.infra.processes import free_port, run_streamrec, streamrec_process
from streamrec.settings import Settings, load_settings
from streams.events import Topics
from streams.topics import delete_topics, ensure_topics


@dataclass(frozen=True)
class Stack:
    settings: Settings
    url: str
    scratch: Path


def _wait_ready(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("the API did not become ready")


@contextmanager
def fresh_topics(base: Settings, state_dir: Path, **update: Any) -> Iterator[Settings]:
    """``base`` on a new topic prefix (its topics created), ``state_dir`` and free worker
    and API ports (and ``update``); the prefix's topics are deleted afterwards."""
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    settings = base.model_copy(
        update={
            "topic_prefix": prefix,
            "state_dir": state_dir,
            "api_port": free_port(),
            "worker_port": free_port(),
            **update,
        }
    )
    ensure_topics(settings.bootstrap_servers, Topics(prefix), settings.topic_partitions)
    try:
        yield settings
    finally:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
        names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
        delete_topics(settings.bootstrap_servers, names)


@contextmanager
def running_stack(source: str) -> Iterator[Stack]:
    """Replay ``source`` into fresh topics, run a worker and an API, wait until both are
    caught up and ready; remove the topics afterwards."""
    base = load_settings()
    with (
        tempfile.TemporaryDirectory() as scratch_dir,
        fresh_topics(base, Path(scratch_dir) / "state") as settings,
    ):
        scratch = Path(scratch_dir)
        run_streamrec(settings, "features", "apply")
        run_streamrec(settings, "replay", source, "--speed", "max")
        url = f"http://127.0.0.1:{settings.api_port}"
        with (
            streamrec_process(settings, "worker", log=scratch / "worker.log"),
            streamrec_process(settings, "serve", log=scratch / "api.log"),
        ):
            _wait_ready(url)
            wait_until_caught_up(settings.bootstrap_servers, f"{settings.topic_prefix}worker")
            yield Stack(settings, url, scratch)
