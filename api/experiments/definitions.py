"""An experiment's definition (the admin contract), assignment and team-draft interleaving.

Pure: no I/O. Assignment is a hash of (experiment, user), so it is sticky across requests
and API processes and independent between experiments (the experiment's name salts it).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

# Strategies a variant can serve: registry aliases (the set holding the alias; the
# baseline item-kNN while none does), that baseline itself, the popularity list, and a uniform
# random list (a floor, and what exploration draws from).
Strategy = Literal["champion", "challenger", "baseline", "popularity", "random"]
STRATEGIES: tuple[str, ...] = ("champion", "challenger", "baseline", "popularity", "random")
# Names become Redis keys and Prometheus labels: short, plain, and few.
Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")]
MAX_EXPERIMENTS = 16
MAX_VARIANTS = 8
SHARE_TOLERANCE = 1e-6


class VariantSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name
    strategy: Strategy
    share: float = Field(gt=0.0, le=1.0, allow_inf_nan=False)


class ExperimentSpec(BaseModel):
    """``POST /admin/experiments``; shares of an A/B test sum to 1. Interleaving merges
    exactly two variants into every list, so their shares are not used."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name
    mode: Literal["ab", "interleave"] = "ab"
    variants: tuple[VariantSpec, ...] = Field(min_length=2, max_length=MAX_VARIANTS)
    # The share of users in the experiment at all; the rest get the default serving.
    traffic: float = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    # Per slot, the chance of a uniformly random item instead of the policy's (logged with
    # its propensity, for off-policy evaluation); 0 explores nothing.
    exploration: float = Field(0.0, ge=0.0, le=0.5, allow_inf_nan=False)
    created_ms: int = 0  # set by the API; the oldest experiment governs a user in several

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentSpec:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names repeat: {names}")
        if self.mode == "interleave" and len(self.variants) != 2:
            raise ValueError("interleave merges exactly two variants")
        if self.mode == "ab":
            total = sum(v.share for v in self.variants)
            if abs(total - 1.0) > SHARE_TOLERANCE:
                raise ValueError(f"variant shares sum to {total:g}, not 1")
        return self


def unit_hash(*parts: str) -> float:
    """A uniform number in [0, 1) from ``parts``; the same in every process and run."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def enrolled(spec: ExperimentSpec, user_id: str) -> bool:
    return unit_hash(spec.name, "traffic", user_id) < spec.traffic


def assign(spec: ExperimentSpec, user_id: str) -> VariantSpec:
    """The user's variant: the cumulative share their hash falls in."""
    point = unit_hash(spec.name, user_id) * sum(v.share for v in spec.variants)
    upto = 0.0
    for variant in spec.variants:
        upto += variant.share
        if point < upto:
            return variant
    return spec.variants[-1]


def governing(specs: Sequence[ExperimentSpec], user_id: str) -> ExperimentSpec | None:
    """The experiment that decides this user's list: the oldest one they are enrolled in."""
    for spec in sorted(specs, key=lambda s: (s.created_ms, s.name)):
        if enrolled(spec, user_id):
            return spec
    return None


def team_draft(
    first: Sequence[str], second: Sequence[str], k: int, rng: random.Random
) -> list[tuple[str, int]]:
    """Team-draft interleaving (Radlinski, Kurup and Joachims, CIKM 2008).

    Teams pick in turn, the team with fewer picks first and a coin toss on a tie; each
    takes its highest-ranked item not yet picked. Returns ``(item, team)`` with team 0 for
    ``first`` and 1 for ``second``; at most ``k`` items, fewer when both run out.
    """
    lists = (first, second)
    at = [0, 0]
    picks = [0, 0]
    chosen: set[str] = set()
    merged: list[tuple[str, int]] = []
    while len(merged) < k:
        for team in (0, 1):  # skip what the other team already took
            while at[team] < len(lists[team]) and lists[team][at[team]] in chosen:
                at[team] += 1
        left = [at[t] < len(lists[t]) for t in (0, 1)]
        if not any(left):
            break
        if picks[0] < picks[1] or (picks[0] == picks[1] and rng.random() < 0.5):
            team = 0 if left[0] else 1
        else:
            team = 1 if left[1] else 0
        item = lists[team][at[team]]
        chosen.add(item)
        merged.append((item, team))
        picks[team] += 1
    return merged


def explore(
    ranked: Sequence[str], pool: Sequence[str], k: int, epsilon: float, rng: random.Random
) -> list[tuple[str, float]]:
    """Epsilon-greedy at the list level, with each slot's propensity.

    With probability ``1 - epsilon`` the policy's list (``ranked[:k]``), else ``k`` items
    drawn uniformly without replacement from the ``n`` items of ``pool`` and the policy's
    list together, in random order. Every slot of the random list is then uniform over the
    ``n``, so the chance that slot r holds item i is exactly
    ``(1 - epsilon) * [ranked[r] == i] + epsilon / n``: the marginal propensity per slot
    that inverse propensity scoring (``analysis.ope``) needs. (Exploring slot by slot
    instead gives only propensities conditional on the slots above, which biases it.)
    """
    greedy = list(ranked[:k])
    universe = list(dict.fromkeys([*greedy, *pool]))
    if not universe:
        return []
    chosen = greedy
    if epsilon > 0.0 and rng.random() < epsilon:
        chosen = rng.sample(universe, min(k, len(universe)))
    uniform = epsilon / len(universe)
    return [
        (item, uniform + ((1.0 - epsilon) if slot < len(greedy) and greedy[slot] == item else 0.0))
        for slot, item in enumerate(chosen)
    ]
