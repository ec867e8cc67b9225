"""GET /recommend: one list for one user; unknown users get the cold-start list."""

from __future__ import annotations

from fastapi import APIRouter

from api.cockpit import recommendation_out
from api.deps import RecommendationsDep, ServicesDep
from api.routes.params import KParam, UserIdParam
from api.schemas import RecommendationOut

router = APIRouter(tags=["recommend"])


@router.get("/recommend", response_model=RecommendationOut)
async def get_recommendations(
    user_id: UserIdParam,
    recommendations: RecommendationsDep,
    services: ServicesDep,
    k: KParam = 10,
) -> RecommendationOut:
    served = await recommendations.recommend(user_id, k, channel="http")
    return recommendation_out(served, services.state.catalogue)
