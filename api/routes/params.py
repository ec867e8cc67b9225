"""Query parameters shared by /recommend and /recommend/stream."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

MAX_K = 100

UserIdParam = Annotated[
    str, Query(min_length=1, max_length=256, description="the user to recommend for")
]
KParam = Annotated[int, Query(ge=1, le=MAX_K, description=f"how many items, 1 to {MAX_K}")]
