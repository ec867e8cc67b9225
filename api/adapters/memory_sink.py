"""In-memory EventSink: collects events in order; can be told to fail, for tests."""

from __future__ import annotations

from typing import TypeVar

from api.ports import EventSinkError, PortUnavailable
from streams.events import Event

E = TypeVar("E", bound=Event)


class InMemoryEventSink:
    def __init__(self) -> None:
        self.events: list[Event] = []
        # Set to a message to make every publish (or ping) fail with it.
        self.failure: str | None = None

    async def publish(self, event: Event) -> None:
        if self.failure is not None:
            raise EventSinkError(self.failure)
        self.events.append(event)

    async def ping(self) -> None:
        if self.failure is not None:
            raise PortUnavailable(self.failure)

    def of_type(self, event_type: type[E]) -> list[E]:
        return [event for event in self.events if isinstance(event, event_type)]
