"""A bare FastAPI app: the floor the real routes are compared with in the same load test.

    .venv/bin/python -m bench.bare_api PORT

``GET /recommend`` answers a fixed list of the real one's shape, ``POST /events`` takes a
body and answers 202; no stores, no models, no middleware, the same uvicorn settings as
``streamrec serve`` (uvloop, httptools, no access log). What the real routes reach as a
share of this is the cost of their work, not of the framework.
"""

from __future__ import annotations

import sys
import uuid
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, status

ITEMS = [
    {"item_id": str(n), "rank": n, "score": 1.0 / n, "reason": "popular", "title": None}
    for n in range(1, 11)
]


def create_app() -> FastAPI:
    app = FastAPI()

    @app.get("/recommend")
    async def recommend(user_id: str, k: int = 10) -> dict[str, Any]:
        return {
            "request_id": uuid.uuid4().hex,
            "user_id": user_id,
            "variant": "bare",
            "model_version": "none",
            "items": ITEMS[:k],
        }

    @app.post("/events", status_code=status.HTTP_202_ACCEPTED)
    async def events(request: Request) -> dict[str, Any]:
        await request.json()
        return {"event_id": uuid.uuid4().hex, "click_event_id": None}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


if __name__ == "__main__":
    uvicorn.run(
        create_app(), host="127.0.0.1", port=int(sys.argv[1]), access_log=False, log_level="warning"
    )
