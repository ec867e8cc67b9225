"""Admin routes of the online experiments, behind the API key (issue 16's contract).

``POST /admin/experiments`` creates one (its counters from zero) or changes a running one
(the same name: new shares, same counters); ``GET`` lists them or returns one's table;
``DELETE`` stops it. Every change goes to the store (Redis) and this process's book at
once; the other API processes see it at their next poll (``EXPERIMENT_POLL_SECONDS``).
"""

from __future__ import annotations

import time
from typing import Any

import anyio
from fastapi import APIRouter, HTTPException, Path, status

from api.deps import ServicesDep
from api.experiments.definitions import MAX_EXPERIMENTS, ExperimentSpec
from api.experiments.stats import experiment_table
from api.security import AdminKey

router = APIRouter(prefix="/admin/experiments", tags=["experiments"], dependencies=[AdminKey])
ExperimentName = Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")


@router.post("", status_code=status.HTTP_201_CREATED)
async def put_experiment(spec: ExperimentSpec, services: ServicesDep) -> dict[str, Any]:
    book = services.experiments
    await book.refresh()
    existing = book.find(spec.name)
    if existing is None and len(book.current) >= MAX_EXPERIMENTS:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"{MAX_EXPERIMENTS} experiments run already; stop one"
        )
    # A change keeps the start time: the experiment stays where it was in the order.
    created = existing.created_ms if existing is not None else int(time.time() * 1000)
    stored = spec.model_copy(update={"created_ms": created})
    await anyio.to_thread.run_sync(
        book.store.save, spec.name, stored.model_dump(), existing is None
    )
    await book.refresh()
    return stored.model_dump()


@router.get("")
async def list_experiments(services: ServicesDep) -> dict[str, Any]:
    book = services.experiments
    await book.refresh()
    return {"experiments": [spec.model_dump() for spec in book.current]}


@router.get("/{name}")
async def get_experiment(services: ServicesDep, name: str = ExperimentName) -> dict[str, Any]:
    book = services.experiments
    await book.refresh()
    spec = book.find(name)
    if spec is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no experiment {name!r}")
    counts = await anyio.to_thread.run_sync(book.store.counts, name)
    return await anyio.to_thread.run_sync(experiment_table, spec, counts)


@router.delete("/{name}")
async def stop_experiment(services: ServicesDep, name: str = ExperimentName) -> dict[str, Any]:
    """Stops assigning users to it; its counters stay readable until it is created again."""
    book = services.experiments
    removed = await anyio.to_thread.run_sync(book.store.delete, name)
    await book.refresh()
    if not removed:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no experiment {name!r}")
    return {"stopped": name}
