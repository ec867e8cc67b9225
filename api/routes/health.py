"""Liveness, readiness and Prometheus metrics.

/healthz answers whenever the process serves HTTP. /readyz checks what a useful answer
needs: the broker (events can be written), the online store (features can be read), its
features (the worker or backfill has pushed since the store was last empty), the
change feed (streams will update), the recommender state (the log has been read) and
the models (the champion set's label, or "no champion: baseline item-kNN": never a failure, since
the baseline answers without models);
each check is bounded by a timeout, and a 503 names the checks that failed.

/readyz is unauthenticated, so a failed check says only what failed, in a fixed sentence:
the error texts of clients (which carry hosts and internals) and filesystem paths are kept
for ``GET /admin/readiness``, behind the admin key.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable

import anyio
from fastapi import APIRouter, Depends, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from api.deps import MetricsDep, ServicesDep
from api.ports import PortUnavailable
from api.schemas import CheckResult, Readiness
from api.security import require_api_key

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_SECONDS = 3.0
# What an unauthenticated caller learns about a failed check.
PUBLIC_FAILURE = {
    "broker": "the event log does not accept writes",
    "online_store": "the online store does not answer",
    "features": "no features confirmed in the online store (empty, wiped or unreachable); "
    "after a wipe run the worker or `streamrec backfill --from-beginning`",
    "change_feed": "the change feed is not connected",
    "recommender": "the event log has not been read and indexed yet",
    "models": "the model status is unknown",
}


@router.get("/healthz")
async def healthz() -> dict[str, str | int]:
    # pid: which of the API's processes answered (`streamrec serve --workers`).
    return {"status": "ok", "pid": os.getpid()}


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(services: ServicesDep) -> JSONResponse:
    readiness = await _readiness(services)
    for name, result in readiness.checks.items():
        if not result.ok:
            readiness.checks[name] = CheckResult(ok=False, detail=PUBLIC_FAILURE[name])
    return _response(readiness)


@router.get(
    "/admin/readiness",
    response_model=Readiness,
    responses={503: {"model": Readiness}},
    dependencies=[Depends(require_api_key)],
    tags=["admin"],
)
async def admin_readiness(services: ServicesDep) -> JSONResponse:
    """/readyz with every check's own detail (error texts, paths)."""
    return _response(await _readiness(services))


def _response(readiness: Readiness) -> JSONResponse:
    return JSONResponse(
        readiness.model_dump(),
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE if readiness.failed else status.HTTP_200_OK,
    )


async def _readiness(services: ServicesDep) -> Readiness:
    checks = {
        "broker": services.sink.ping,
        "online_store": services.features.ping,
        "features": lambda: _features_ready(services),
        "change_feed": services.changes.ping,
        "recommender": lambda: _recommender_ready(services),
        "models": lambda: _models_ready(services),
    }
    results = await asyncio.gather(*(_run_check(check) for check in checks.values()))
    by_name = dict(zip(checks, results, strict=True))
    failed = [name for name, result in by_name.items() if not result.ok]
    return Readiness(status="not ready" if failed else "ready", failed=failed, checks=by_name)


async def _recommender_ready(services: ServicesDep) -> str:
    summary = services.state.summary()
    if not summary.catalogue_loaded:
        raise PortUnavailable(
            f"event log under {services.settings.datasets_dir} not read yet"
            + (f" (last error: {summary.last_log_error})" if summary.last_log_error else "")
        )
    if summary.items_known == 0:
        index = "index built" if summary.index_built else "co-occurrence index building"
        return f"no items in the event log yet; {index}"
    if not summary.index_built:
        # Until then a list is the popularity fallback, not the baseline kNN's.
        raise PortUnavailable(f"{summary.items_known} items, co-occurrence index building")
    return f"{summary.items_known} items, {summary.items_with_neighbours} with neighbours"


async def _features_ready(services: ServicesDep) -> str:
    """Fails while the online store holds no pushed features (Redis restarted empty or
    wiped): the marker ``streamrec.infra.readiness`` keeps, written by the worker and backfill."""
    if services.features_marker is None:
        return "no readiness marker to check (test reader or non-Redis online store)"
    return await services.features_marker.check()


async def _models_ready(services: ServicesDep) -> str:
    """Always ready (the baseline answers without models); the detail says what serves."""
    return services.champion.status


async def _run_check(check: Callable[[], Awaitable[str | None]]) -> CheckResult:
    try:
        detail = await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        return CheckResult(ok=False, detail=f"no answer within {CHECK_TIMEOUT_SECONDS}s")
    except PortUnavailable as exc:
        return CheckResult(ok=False, detail=str(exc))
    return CheckResult(ok=True, detail=detail or "ok")


@router.get("/metrics")
async def metrics(api_metrics: MetricsDep) -> Response:
    # With several API processes the merge reads every process's files: off the loop.
    if api_metrics.shared_dir is None:
        return Response(api_metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
    body = await anyio.to_thread.run_sync(api_metrics.exposition)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
