"""Admin routes, behind the API key. Replay control and variants come later."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter

from api.deps import ServicesDep
from api.security import AdminKey
from api.serving.heuristic import MODEL_VERSION

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[AdminKey])


@router.get("/status")
async def admin_status(services: ServicesDep) -> dict[str, Any]:
    return {
        "model_version": MODEL_VERSION,
        "recommender": asdict(services.state.summary()),
        "sse_clients": services.changes.subscriber_count(),
    }
