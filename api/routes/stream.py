"""GET /recommend/stream: server-sent ``recommendations`` events for one user.

One list at once, then a fresh one whenever the stream worker says the user's features
changed; bursts of notices are debounced, and the streams of one user share each computed
list (``api.stream_hub``). Too many streams get 429 (per user) or 503 (in total).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.cockpit import recommendation_out
from api.deps import Services, ServicesDep
from api.routes.params import KParam, UserIdParam
from api.stream_hub import StreamHub

router = APIRouter(tags=["recommend"])

EVENT_NAME = "recommendations"


@router.get(
    "/recommend/stream",
    response_class=EventSourceResponse,
    responses={
        429: {"description": "this user has as many open streams as allowed"},
        503: {"description": "this instance has as many open streams as allowed"},
    },
)
async def stream_recommendations(
    request: Request, user_id: UserIdParam, services: ServicesDep, k: KParam = 10
) -> EventSourceResponse:
    hub: StreamHub = request.app.state.stream_hub
    hub.admit(user_id)
    return EventSourceResponse(
        _recommendation_events(services, hub, user_id, k),
        ping=services.settings.sse_ping_seconds,
    )


async def _recommendation_events(
    services: Services, hub: StreamHub, user_id: str, k: int
) -> AsyncIterator[ServerSentEvent]:
    services.metrics.sse_clients.inc()
    try:
        async with hub.listen(services, user_id, k) as listener:
            while True:
                served = await listener.next()
                yield ServerSentEvent(
                    data=recommendation_out(served, services.state.catalogue).model_dump_json(),
                    event=EVENT_NAME,
                    id=served.request_id,
                )
    finally:
        # Runs when the client disconnects too: sse-starlette cancels this generator.
        services.metrics.sse_clients.dec()
