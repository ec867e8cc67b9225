"""What routes depend on, as ``Annotated`` aliases over the services the lifespan built.

The providers are ``async def`` although they never wait: FastAPI runs a plain ``def``
dependency in the thread pool, one thread hop per dependency per request (a tenth of a
``POST /events``'s CPU time under load, py-spy), for a getattr."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from api.adapters.features_marker import FeaturesMarker
from api.experiments.book import ExperimentBook
from api.metrics import ApiMetrics
from api.ports import ChangeFeed, EventSink, FeatureReader
from api.serving.champion import ChampionWatcher
from api.serving.service import RecommendationService, ServedLog
from api.state import RecommenderState
from streamrec.settings import Settings


@dataclass(frozen=True)
class Services:
    """Everything the lifespan opened; stored on ``app.state.services``."""

    settings: Settings
    metrics: ApiMetrics
    features: FeatureReader
    sink: EventSink
    changes: ChangeFeed
    state: RecommenderState
    served_log: ServedLog
    champion: ChampionWatcher
    recommendations: RecommendationService
    experiments: ExperimentBook
    # None: no marker to check (an injected reader in tests, or a non-Redis online store).
    features_marker: FeaturesMarker | None = None


async def get_services(request: Request) -> Services:
    return request.app.state.services


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_metrics(request: Request) -> ApiMetrics:
    return request.app.state.metrics


ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]


async def get_recommendations(services: ServicesDep) -> RecommendationService:
    return services.recommendations


async def get_sink(services: ServicesDep) -> EventSink:
    return services.sink


async def get_changes(services: ServicesDep) -> ChangeFeed:
    return services.changes


async def get_served_log(services: ServicesDep) -> ServedLog:
    return services.served_log


RecommendationsDep = Annotated[RecommendationService, Depends(get_recommendations)]
SinkDep = Annotated[EventSink, Depends(get_sink)]
ChangeFeedDep = Annotated[ChangeFeed, Depends(get_changes)]
ServedLogDep = Annotated[ServedLog, Depends(get_served_log)]
