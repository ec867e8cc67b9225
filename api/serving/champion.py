"""The champion model set: found in the MLflow registry, loaded off the event loop, swapped whole.

At start and every ``model_poll_seconds`` the watcher asks the registry which set holds
the ``champion`` alias (:func:`streamrec.infra.model_store.find_champion_set`). When that is a
set it does not serve yet, it downloads and builds it in a worker thread while requests
keep being served by what was there before (the baseline, or the previous set), then
swaps it in with one reference assignment: a request reads ``current`` once and finishes
on the set it read, so none is dropped or sees half of a swap.

A set that fails to load is logged and counted and not retried until the champion moves
again; a registry that does not answer keeps the current set. When the champion cannot be
resolved (no set yet, or stages of two sets during a promotion) the current set stays.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio

from api.metrics import ApiMetrics
from api.ports import ItemStats
from serving.cascade import ItemFeatures, ServingSet
from serving.loading import SetLoadError, build_cascade
from streamrec.infra.model_store import (
    CHAMPION,
    ChampionSet,
    StageFolder,
    find_champion_set,
    read_folder,
)
from streamrec.settings import Settings

logger = logging.getLogger(__name__)

NO_CHAMPION = "no champion: baseline item-kNN"
# The longest wait before a champion that failed to load is tried again.
RETRY_MAX_SECONDS = 600.0
# What can go wrong between the registry and a built set: MLflow's own errors (imported
# lazily, below), a missing or unreadable file, a state dict that does not fit its config.
_LOAD_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    RuntimeError,
    KeyError,
    pickle.UnpicklingError,
)


def _mlflow_errors() -> tuple[type[BaseException], ...]:
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    # A SQLite registry that training is creating or migrating fails with SQLAlchemy's.
    return (MlflowException, SQLAlchemyError, *_LOAD_ERRORS)


class ChampionWatcher:
    def __init__(self, settings: Settings, metrics: ApiMetrics, alias: str = CHAMPION) -> None:
        # ``challenger`` for the canary's set: the same watcher, another alias.
        self.alias = alias
        self._settings = settings
        self._metrics = metrics
        self._client: Any = None
        self.current: ServingSet | None = None
        self.status = f"{NO_CHAMPION} (registry not read yet)"
        self._failed_label: str | None = None  # the set that last failed to load
        self._failures = 0  # consecutive failures of that set
        self._retry_at = 0.0  # monotonic time before which it is not tried again
        self.checked = asyncio.Event()  # set once the registry was first asked
        self._errors: tuple[type[BaseException], ...] | None = None

    # -- the registry ----------------------------------------------------------------------

    def _find(self) -> ChampionSet | None:
        """Blocking: the registry's current champion set, or None."""
        if self._client is None:
            self._client = self._open_client()
            if self._client is None:
                return None
        return find_champion_set(self._client, self.alias)

    def _open_client(self) -> Any:
        from mlflow import MlflowClient

        from streamrec.infra.quiet import quiet_libraries

        quiet_libraries()  # MLflow's SQLAlchemy deprecation, after Feast reset the filters

        settings = self._settings
        if not settings.mlflow_tracking_uri:
            database = settings.state_dir / "mlflow" / "mlflow.db"
            if not database.exists():
                # Opening it would create an empty registry; nothing was trained yet.
                return None
        return MlflowClient(tracking_uri=settings.mlflow_uri)

    def _download(self, champion: ChampionSet) -> dict[str, StageFolder]:
        """Blocking: every stage's folder, read into memory."""
        import mlflow

        # A server log is no terminal: no progress bars per download (read per call).
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

        folders: dict[str, StageFolder] = {}
        with tempfile.TemporaryDirectory(prefix="streamrec-set-") as scratch:
            for stage, source in champion.sources.items():
                destination = Path(scratch) / stage
                destination.mkdir()
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=source,
                    dst_path=str(destination),
                    tracking_uri=self._settings.mlflow_uri,
                )
                folders[stage] = read_folder(Path(local))
        return folders

    # -- checking and loading --------------------------------------------------------------

    async def check(self, online_stats: Mapping[str, ItemStats]) -> bool:
        """Look at the registry once; load and swap in a new champion. True when swapped."""
        if self._errors is None:
            self._errors = await anyio.to_thread.run_sync(_mlflow_errors)
        errors = self._errors
        try:
            champion = await anyio.to_thread.run_sync(self._find)
        except errors as exc:
            self._client = None  # open it afresh next time: the backend may have changed
            self._metrics.model_registry_failures.inc()
            logger.warning("the model registry did not answer, keeping what is served: %s", exc)
            return False
        finally:
            self.checked.set()
        if champion is None:
            if self.current is None:
                self.status = NO_CHAMPION
            return False
        serving = self.current
        if serving is not None and serving.cascade.label == champion.label:
            return False
        if champion.label == self._failed_label and time.monotonic() < self._retry_at:
            return False
        started = time.perf_counter()
        load_errors: tuple[type[BaseException], ...] = (SetLoadError, *errors)
        try:
            folders = await anyio.to_thread.run_sync(self._download, champion)
            cascade = await anyio.to_thread.run_sync(
                build_cascade, champion.label, champion.set_id, folders
            )
            items = await anyio.to_thread.run_sync(
                ItemFeatures.build, cascade.item_ids, online_stats
            )
        except load_errors as exc:
            # Tried again later, less often each time: the artifact store may be down for
            # a while, or the set may be broken for good (then a new champion is needed).
            if champion.label != self._failed_label:
                self._failed_label, self._failures = champion.label, 0
            self._failures += 1
            delay = min(RETRY_MAX_SECONDS, self._settings.model_poll_seconds * 2**self._failures)
            self._retry_at = time.monotonic() + delay
            self._metrics.model_loads.labels("failed").inc()
            logger.error(
                "champion %s could not be loaded (attempt %d, next in %.0fs): %s",
                champion.label,
                self._failures,
                delay,
                exc,
            )
            serving_now = serving.cascade.label if serving is not None else NO_CHAMPION
            self.status = f"{serving_now} (champion {champion.label} failed to load: {exc})"
            return False
        self.current = ServingSet(cascade, items)  # the swap: one reference assignment
        self._failed_label, self._failures = None, 0
        seconds = time.perf_counter() - started
        self._metrics.model_loads.labels("loaded").inc()
        self._metrics.model_load_seconds.set(seconds)
        if self.alias == CHAMPION:  # the served-model gauge is the champion's
            if serving is not None:  # 0, not removed: unsupported in multiprocess mode
                info = self._metrics.model_info
                info.labels(serving.cascade.label, serving.cascade.set_id).set(0)
            self._metrics.model_info.labels(champion.label, champion.set_id).set(1)
        missing = ", ".join(f"{s}: {e}" for s, e in cascade.stage_errors.items())
        self.status = champion.label + (f" (falling back for {missing})" if missing else "")
        logger.info(
            "serving model set %s (%s) loaded in %.2fs: %d items, %d users",
            champion.label,
            champion.set_id,
            seconds,
            len(cascade.item_ids),
            len(cascade.user_index),
        )
        return True

    async def refresh_items(self, online_stats: Mapping[str, ItemStats]) -> None:
        """Re-align the current set's item features to freshly read item stats."""
        serving = self.current
        if serving is None:
            return
        items = await anyio.to_thread.run_sync(
            ItemFeatures.build, serving.cascade.item_ids, online_stats, serving.items
        )
        # A set swapped in meanwhile already built its own features: keep those; nothing
        # changed: the same features (and the set's cached item table) stay.
        if self.current is serving and items is not serving.items:
            self.current = ServingSet(serving.cascade, items)

    def item_ids(self) -> tuple[str, ...]:
        """The served set's items, which the item refresh must read too."""
        serving = self.current
        return serving.cascade.item_ids if serving is not None else ()

    async def run(
        self, period_seconds: float, online_stats: Callable[[], Mapping[str, ItemStats]]
    ) -> None:
        """Poll forever; ``online_stats`` returns the item stats the API holds now."""
        while True:
            try:
                await self.check(online_stats())
            except Exception:
                # The poller must outlive one bad poll (an error type not foreseen above):
                # log it with its traceback, count it, and ask again next period.
                self._client = None
                self._metrics.model_registry_failures.inc()
                logger.exception("checking the model registry failed; retrying")
            await asyncio.sleep(period_seconds)


__all__ = ["NO_CHAMPION", "ChampionWatcher"]
