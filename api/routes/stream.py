"""GET /recommend/stream: server-sent ``recommendations`` events for one user.

One list at once, then a fresh one whenever the stream worker says the user's features
changed. Bursts of notices (a replay folding many events) are debounced: the list is
recomputed once the notices pause for ``DEBOUNCE_SECONDS``, or after
``DEBOUNCE_MAX_SECONDS`` of a continuous burst, so a busy user still sees updates.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.cockpit import recommendation_out
from api.deps import Services, ServicesDep
from api.ports import Subscription
from api.routes.params import KParam, UserIdParam

router = APIRouter(tags=["recommend"])

EVENT_NAME = "recommendations"
DEBOUNCE_SECONDS = 0.05
DEBOUNCE_MAX_SECONDS = 0.5


@router.get("/recommend/stream", response_class=EventSourceResponse)
async def stream_recommendations(
    user_id: UserIdParam, services: ServicesDep, k: KParam = 10
) -> EventSourceResponse:
    return EventSourceResponse(
        _recommendation_events(services, user_id, k),
        ping=services.settings.sse_ping_seconds,
    )


async def _recommendation_events(
    services: Services, user_id: str, k: int
) -> AsyncIterator[ServerSentEvent]:
    services.metrics.sse_clients.inc()
    try:
        # Subscribe before the first read, so a change between the two is not missed.
        async with services.changes.subscribe(user_id) as subscription:
            noticed: float | None = None  # when the notice behind this update came
            while True:
                served = await services.recommendations.recommend(user_id, k, channel="sse")
                yield ServerSentEvent(
                    data=recommendation_out(served, services.state.catalogue).model_dump_json(),
                    event=EVENT_NAME,
                    id=served.request_id,
                )
                if noticed is not None:
                    services.metrics.sse_update_seconds.observe(time.monotonic() - noticed)
                await subscription.changed()
                noticed = time.monotonic()
                await _debounce(subscription)
    finally:
        # Runs when the client disconnects too: sse-starlette cancels this generator.
        services.metrics.sse_clients.dec()


async def _debounce(subscription: Subscription) -> None:
    deadline = time.monotonic() + DEBOUNCE_MAX_SECONDS
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            await asyncio.wait_for(subscription.changed(), min(DEBOUNCE_SECONDS, remaining))
        except TimeoutError:
            return
