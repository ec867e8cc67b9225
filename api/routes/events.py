"""POST /events: a client reports an interaction; 202 once the broker has it.

Nothing is written unless the whole input is valid. A click that names the ``request_id``
of a served list is also a Click event; its rank comes from the body or, when absent,
from this instance's memory of recent lists; if neither knows it the input is refused
(422) rather than written with a made-up rank that would bias position models.

A client's ``event_time`` more than ``events_max_future_seconds`` ahead of this server's
clock is refused (422): the log is what training reads, and an event dated 2099 would sit
in every future window. Past times are accepted (clients send history) unless
``events_max_past_seconds`` is set. Ingest keys and the per-client rate limit are
``api.ingest``'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fastapi import APIRouter, HTTPException, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from api.deps import MetricsDep, ServedLogDep, SettingsDep, SinkDep
from api.ingest import IngestAdmission
from api.ports import EventSinkError
from api.schemas import EventAccepted, EventIn
from streamrec.settings import Settings
from streams.events import Click, Event, Interaction, now_ms

router = APIRouter(tags=["events"])


@router.post(
    "/events",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=EventAccepted,
    dependencies=[IngestAdmission],
    responses={
        401: {"description": "ingest keys are configured and none was sent"},
        403: {"description": "the ingest key is not one of the configured keys"},
        413: {"description": "the body is larger than STREAMREC_API_MAX_BODY_BYTES"},
        429: {"description": "this client passed the rate limit; see Retry-After"},
        503: {"description": "the event log is unavailable; nothing was written"},
    },
)
async def post_event(
    body: EventIn,
    sink: SinkDep,
    served_log: ServedLogDep,
    metrics: MetricsDep,
    settings: SettingsDep,
) -> EventAccepted:
    _check_time_window(body, settings)
    events = _events_of(body, served_log.rank_of)
    results = await asyncio.gather(*(sink.publish(e) for e in events), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    for failure in failures:
        if not isinstance(failure, EventSinkError):
            raise failure
    if failures:
        metrics.events_rejected.labels("unavailable").inc()
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"event log unavailable, nothing accepted; retry later ({failures[0]})",
        )
    metrics.events_accepted.labels(body.action).inc()
    interaction = events[0]
    click = events[1] if len(events) > 1 else None
    return EventAccepted(
        event_id=interaction.event_id, click_event_id=click.event_id if click else None
    )


def _check_time_window(body: EventIn, settings: Settings) -> None:
    if body.event_time is None:
        return
    now = now_ms()
    latest = now + int(settings.events_max_future_seconds * 1000)
    problem = None
    if body.event_time > latest:
        problem = (
            f"event_time {body.event_time} is {(body.event_time - now) / 1000:.0f}s ahead of the "
            f"server's clock; at most {settings.events_max_future_seconds:.0f}s is accepted"
        )
    elif settings.events_max_past_seconds is not None:
        earliest = now - int(settings.events_max_past_seconds * 1000)
        if body.event_time < earliest:
            problem = (
                f"event_time {body.event_time} is older than the "
                f"{settings.events_max_past_seconds:.0f}s this server accepts"
            )
    if problem is not None:
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body", "event_time"), "msg": problem}]
        )


def _events_of(body: EventIn, rank_of: Callable[[str, str], int | None]) -> list[Event]:
    event_time = body.event_time if body.event_time is not None else now_ms()
    try:
        events: list[Event] = [
            Interaction(
                user_id=body.user_id,
                item_id=body.item_id,
                action=body.action,
                rating=body.rating,
                source="live",
                event_time=event_time,
            )
        ]
        if body.action == "click" and body.request_id is not None:
            rank = body.rank if body.rank is not None else rank_of(body.request_id, body.item_id)
            if rank is None:
                raise RequestValidationError(
                    [
                        {
                            "type": "missing",
                            "loc": ("body", "rank"),
                            "msg": (
                                f"rank is required: request {body.request_id!r} did not serve "
                                f"item {body.item_id!r} from this instance"
                            ),
                            "input": None,
                        }
                    ]
                )
            events.append(
                Click(
                    request_id=body.request_id,
                    user_id=body.user_id,
                    item_id=body.item_id,
                    rank=rank,
                    event_time=event_time,
                )
            )
    except ValidationError as exc:
        # The event models hold the bounds (rating range, rank >= 1): report their verdict
        # as the same 422 a malformed body gets.
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        ) from exc
    return events
