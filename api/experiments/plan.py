"""One request under the experiments: which variant serves it, and the list it gets.

``plan_list`` is what the request service calls: it finds the experiment that governs the
user (``definitions.governing``), asks the variant's strategy for its list (for an
interleaved experiment, both variants' lists, merged by team draft) and, when the
experiment explores, swaps in random items with their propensities. The randomness is
seeded by the request id, so a list can be re-derived from its event.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from api.experiments.definitions import ExperimentSpec, assign, explore, governing, team_draft
from streams.experiments import INTERLEAVED, INTERLEAVED_VERSIONS

DEFAULT_VARIANT = "default"  # outside every experiment
# The model versions of the strategies that use no model, and what joins an interleaved
# list's two versions (not "+", which the cascade's versions use for their fallbacks).
PLAIN_LISTS = ("popularity", "random")


@dataclass(frozen=True)
class Pick:
    item_id: str
    score: float
    reason: str
    variant: str | None = None  # the team that placed it (interleaving)
    propensity: float | None = None  # when the experiment explores
    din_score: float | None = None  # DIN's logit, when the trained cascade ranked it


@dataclass(frozen=True)
class Planned:
    experiment: str | None
    variant: str
    model_version: str
    picks: list[Pick]


# (strategy, k, rng) -> (model_version, [(item_id, score, reason)]), best first
StrategyLists = Callable[[str, int, random.Random], Awaitable[tuple[str, list[Pick]]]]


async def plan_list(
    specs: Sequence[ExperimentSpec],
    user_id: str,
    request_id: str,
    k: int,
    lists: StrategyLists,
    pool: Callable[[], Sequence[str]],
) -> Planned:
    """The list for one request; ``pool`` gives the items exploration draws from."""
    rng = random.Random(request_id)
    spec = governing(specs, user_id)
    if spec is None:
        model_version, picks = await lists("champion", k, rng)
        return Planned(None, DEFAULT_VARIANT, model_version, picks)
    if spec.mode == "interleave":
        first, second = spec.variants
        version_a, picks_a = await lists(first.strategy, k, rng)
        version_b, picks_b = await lists(second.strategy, k, rng)
        by_item = {p.item_id: p for p in picks_b} | {p.item_id: p for p in picks_a}
        merged = team_draft([p.item_id for p in picks_a], [p.item_id for p in picks_b], k, rng)
        teams = (first.name, second.name)
        picks = [replace(by_item[item], variant=teams[team]) for item, team in merged]
        version = (
            version_a if version_a == version_b else f"{version_a}{INTERLEAVED_VERSIONS}{version_b}"
        )
        return Planned(spec.name, INTERLEAVED, version, _explored(spec, picks, pool, rng, None))
    variant = assign(spec, user_id)
    model_version, picks = await lists(variant.strategy, k, rng)
    picks = [replace(p, variant=variant.name) for p in picks]
    explored = _explored(spec, picks, pool, rng, variant.name)
    return Planned(spec.name, variant.name, model_version, explored)


def _explored(
    spec: ExperimentSpec,
    picks: list[Pick],
    pool: Callable[[], Sequence[str]],
    rng: random.Random,
    variant: str | None,
) -> list[Pick]:
    """The list with exploration; an explored item is credited to the assigned variant
    (A/B) or to no team (interleaving: it counts for neither side's wins)."""
    if spec.exploration <= 0.0:
        return picks
    by_item = {p.item_id: p for p in picks}
    chosen = explore([p.item_id for p in picks], pool(), len(picks), spec.exploration, rng)
    return [
        replace(by_item[item], propensity=round(propensity, 9))
        if item in by_item
        else Pick(item, 0.0, "exploring", variant=variant, propensity=round(propensity, 9))
        for item, propensity in chosen
    ]
