"""The running experiments as this API process sees them: a snapshot, re-read on change.

Every ``EXPERIMENT_POLL_SECONDS`` the book reads the store's version counter (one GET)
and, when it moved, the definitions; a request reads ``current`` once. So a change made
through any API process applies to every one of them within a second, with no restart and
no subscription that could miss a message while reconnecting. A store that does not answer
keeps the last snapshot (logged and counted), like the champion watcher keeps its set.
"""

from __future__ import annotations

import asyncio
import logging

import anyio
from pydantic import ValidationError

from api.experiments.definitions import ExperimentSpec
from streamrec.infra.experiments import ExperimentStore

logger = logging.getLogger(__name__)


class ExperimentBook:
    def __init__(self, store: ExperimentStore) -> None:
        self.store = store
        self.current: tuple[ExperimentSpec, ...] = ()
        self._version: int | None = None

    async def refresh(self) -> bool:
        """Re-read the definitions if they changed; True when the snapshot moved."""
        version = await anyio.to_thread.run_sync(self.store.version)
        if version == self._version:
            return False
        raw = await anyio.to_thread.run_sync(self.store.load)
        specs = []
        for name, definition in sorted(raw.items()):
            try:
                specs.append(ExperimentSpec.model_validate(definition))
            except ValidationError as exc:
                # Written by another build, or by hand: skip it, keep serving the others.
                logger.error("experiment %s in the store is not valid, ignored: %s", name, exc)
        self.current = tuple(specs)
        self._version = version
        return True

    def find(self, name: str) -> ExperimentSpec | None:
        return next((spec for spec in self.current if spec.name == name), None)

    async def run(self, period_seconds: float) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:
                # The poller must outlive a store outage: keep the snapshot, try again.
                logger.exception("reading the experiments failed; keeping the last ones")
            await asyncio.sleep(period_seconds)
