"""The canary's two steps, shared by ``streamrec canary``/``promote`` and the monitor.

``start_canary`` stores the A/B experiment champion vs challenger (every API process applies
it within a second); ``check_canary`` reads its counters and, at the horizon, moves the
aliases through :func:`training.registry.finish_canary` and stops the experiment. The
monitor calls both itself after a retrain whose set became ``challenger``, so the loop
drift → retrain → gate → canary → champion runs without a person; the commands are the
same steps by hand.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from streamrec.infra.experiments import ExperimentStore
from streamrec.infra.model_store import CHALLENGER, find_champion_set
from training.registry import CanaryDecision, decide_canary, finish_canary

CANARY = "canary"


class NoCanary(ValueError):
    """The experiment under the canary's name is not champion vs challenger."""


@dataclass(frozen=True)
class CanaryResult:
    decision: CanaryDecision
    set_id: str | None  # the challenger set decided; None while waiting or when none holds it
    versions: dict[str, str] | None  # its versions, once decided


def canary_definition(
    share: float, name: str = CANARY, now_ms: int | None = None
) -> dict[str, Any]:
    """The experiment's definition as the API validates it (``ExperimentSpec``)."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"the challenger's share must be between 0 and 1, got {share}")
    return {
        "name": name,
        "mode": "ab",
        "variants": [
            {"name": "champion", "strategy": "champion", "share": 1.0 - share},
            {"name": "challenger", "strategy": "challenger", "share": share},
        ],
        "created_ms": int(time.time() * 1000) if now_ms is None else now_ms,
    }


def start_canary(store: ExperimentStore, definition: dict[str, Any]) -> None:
    """Store the definition as a new experiment: its counters start from zero."""
    store.save(definition["name"], definition, fresh=True)


def check_canary(
    store: ExperimentStore,
    client: Any,
    *,
    name: str = CANARY,
    margin: float,
    min_lists: int,
    alpha: float = 0.05,
) -> CanaryResult | None:
    """Decide the canary from its counters (``wait`` before the horizon); on a decision,
    move the aliases, tag the versions and stop the experiment. None when no experiment
    of that name runs. ``client``: MlflowClient."""
    definition = store.load().get(name)
    if definition is None:
        return None
    by_strategy = {v["strategy"]: v["name"] for v in definition["variants"]}
    if not {"champion", "challenger"} <= set(by_strategy):
        raise NoCanary(f"{name!r} has no champion and challenger variants")
    counts = store.counts(name)
    champion = counts.get(by_strategy["champion"], {})
    challenger = counts.get(by_strategy["challenger"], {})
    decision = decide_canary(
        champion.get("clicks", 0),
        champion.get("impressions", 0),
        challenger.get("clicks", 0),
        challenger.get("impressions", 0),
        margin=margin,
        min_lists=min_lists,
        alpha=alpha,
    )
    if decision.action == "wait":  # checked every few seconds: no registry read
        return CanaryResult(decision, None, None)
    held = find_champion_set(client, CHALLENGER)
    set_id = held.set_id if held is not None else None
    versions = finish_canary(client, decision)
    store.delete(name)
    return CanaryResult(decision, set_id, versions)
