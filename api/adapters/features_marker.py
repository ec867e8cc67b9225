"""The online store's readiness marker (``streamrec.infra.readiness``), checked for /readyz.

A Redis restarted empty answers reads (every feature is simply missing), so the Feast ping
passes; this check fails instead until the worker or ``streamrec backfill`` has pushed again.
"""

from __future__ import annotations

import anyio

from api.ports import PortUnavailable
from streamrec.infra.readiness import KeyValue, features_status


class FeaturesMarker:
    def __init__(self, store: KeyValue, topic_prefix: str) -> None:
        self._store = store
        self._prefix = topic_prefix

    async def check(self) -> str:
        """The marker's detail when features were pushed; ``PortUnavailable`` otherwise."""
        try:
            status = await anyio.to_thread.run_sync(features_status, self._store, self._prefix)
        except Exception as exc:
            # redis-py raises its own ConnectionError/TimeoutError; all mean "no answer".
            raise PortUnavailable(
                f"readiness marker read failed: {type(exc).__name__}: {exc}"
            ) from exc
        if not status.ready:
            raise PortUnavailable(status.detail)
        return status.detail
