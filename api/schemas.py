"""Request and response bodies of the HTTP contract (DESIGN.md, "HTTP contract").

Field types come from the event contract in ``streams/events.py`` (ids, rating range, rank
bounds, event time), so the published OpenAPI states the bounds the consumers enforce and
there is one copy of each rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator

from streamrec.times import parse_iso_ms
from streams.events import (
    EVENT_TIME_MAX_MS,
    EVENT_TIME_MIN_MS,
    Action,
    EventTimeMs,
    Id,
    Rank,
    Rating,
    RecommendationServed,
    RecommendedItem,
)


def _iso_to_ms(value: object) -> object:
    """A client may send its time as ISO 8601 text instead of epoch milliseconds."""
    if isinstance(value, str):
        try:
            return parse_iso_ms(value)
        except ValueError as exc:
            raise ValueError(
                "event_time is epoch milliseconds (UTC) as an integer, or an ISO 8601 time "
                f"such as 2023-11-14T22:13:20Z; {value[:40]!r} is neither"
            ) from exc
    return value


ClientEventTime = Annotated[
    EventTimeMs,
    BeforeValidator(_iso_to_ms),
    WithJsonSchema(
        {
            "anyOf": [
                {
                    "type": "integer",
                    "minimum": EVENT_TIME_MIN_MS,
                    "maximum": EVENT_TIME_MAX_MS,
                    "description": "epoch milliseconds, UTC",
                },
                {
                    "type": "string",
                    "format": "date-time",
                    "description": "ISO 8601; without a zone it is UTC",
                },
            ],
            "description": "when it happened; at most a few minutes in the future "
            "(STREAMREC_EVENTS_MAX_FUTURE_SECONDS); defaults to the time of receipt",
        }
    ),
]


class ServedItemOut(RecommendedItem):
    """A served item as the event has it, plus what the catalogue and the answer say of it
    (optional: absent from the catalogue, or not worked out, is null)."""

    title: str | None = None
    category: str | None = None
    # The stage that gave the item its final place (e.g. "ranknet", "item-knn").
    stage: str | None = None


class RecommendationOut(BaseModel):
    request_id: str
    user_id: str
    variant: str
    experiment: str | None = None  # the experiment that chose ``variant``
    model_version: str
    items: list[ServedItemOut]

    @classmethod
    def from_event(
        cls,
        served: RecommendationServed,
        titles: Mapping[str, str] | None = None,
        categories: Mapping[str, Sequence[str]] | None = None,
        stage: str | None = None,
    ) -> RecommendationOut:
        titles, categories = titles or {}, categories or {}
        return cls(
            request_id=served.request_id,
            user_id=served.user_id,
            variant=served.variant,
            experiment=served.experiment,
            model_version=served.model_version,
            items=[
                ServedItemOut(
                    **item.model_dump(),
                    title=titles.get(item.item_id),
                    category=next(iter(categories.get(item.item_id, ())), None),
                    stage=stage,
                )
                for item in served.items
            ],
        )


class EventIn(BaseModel):
    """One interaction reported by a client. Unknown fields are refused (typos surface)."""

    model_config = ConfigDict(extra="forbid")

    user_id: Id
    item_id: Id
    action: Action
    rating: Rating | None = Field(None, description="required when action is 'rate'")
    # The /recommend response the click came from; a click with one is also a Click event.
    request_id: Id | None = None
    # Epoch milliseconds (UTC) or ISO 8601; defaults to the time the API received the event.
    event_time: ClientEventTime | None = None
    # Position of the item in that response; looked up from recent responses when absent.
    rank: Rank | None = None

    @model_validator(mode="after")
    def _rate_needs_rating(self) -> EventIn:
        if self.action == "rate" and self.rating is None:
            raise ValueError("action 'rate' needs a rating")
        return self


class EventAccepted(BaseModel):
    event_id: str
    # Set when the event was a click on a served list and a Click event was written too.
    click_event_id: str | None = None


class CheckResult(BaseModel):
    ok: bool
    detail: str


class Readiness(BaseModel):
    status: str
    failed: list[str]
    checks: dict[str, CheckResult]
