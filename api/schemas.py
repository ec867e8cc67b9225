"""Request and response bodies of the HTTP contract (DESIGN.md, "HTTP contract").

Field types come from the event contract in ``streams/events.py``; the bounds that events
enforce (rating range, rank >= 1) are checked by building the events themselves, so there
is one copy of each rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict, model_validator

from streams.events import Action, EventTimeMs, Id, RecommendationServed, RecommendedItem


class ServedItemOut(RecommendedItem):
    """A served item as the event has it, plus what the catalogue and the answer say of it
    (optional: absent from the catalogue, or not worked out, is null)."""

    title: str | None = None
    category: str | None = None
    # The stage that gave the item its final place (e.g. "ranknet", "heuristic").
    stage: str | None = None


class RecommendationOut(BaseModel):
    request_id: str
    user_id: str
    variant: str
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
    rating: float | None = None
    # The /recommend response the click came from; a click with one is also a Click event.
    request_id: Id | None = None
    # Epoch milliseconds, UTC; defaults to the time the API received the event.
    event_time: EventTimeMs | None = None
    # Position of the item in that response; looked up from recent responses when absent.
    rank: int | None = None

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
