"""Admin routes, behind the API key. Replay control and variants come later."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request

from api.deps import ServicesDep
from api.security import AdminKey
from api.serving.baseline import MODEL_VERSION

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[AdminKey])


@router.get("/status")
async def admin_status(request: Request, services: ServicesDep) -> dict[str, Any]:
    return {
        "model_version": MODEL_VERSION,
        "recommender": asdict(services.state.summary()),
        # open streams; the change feed holds one subscription per (user, k) group of them
        "sse_clients": request.app.state.stream_hub.stream_count(),
    }
