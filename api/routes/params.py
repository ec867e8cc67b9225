"""Query parameters shared by /recommend and /recommend/stream."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from streams.events import Id

MAX_K = 100

# The event contract's id rule (``streams.events.Id``), so " u1" is "u1" here as in bodies.
UserIdParam = Annotated[Id, Query(description="the user to recommend for")]
KParam = Annotated[int, Query(ge=1, le=MAX_K, description=f"how many items, 1 to {MAX_K}")]
