"""The experiment counters' fold: which events move them, as pure functions.

The worker's agents hand each decoded batch to :func:`fold_calls`, which turns the events
that concern an experiment into calls of the counters' script
(``streamrec.infra.experiments``): a served list of an experiment (its impressions and
items), every click (joined to its list by ``request_id`` in Redis) and every interaction
(a conversion when the user was recommended the item in an experiment). Served lists
outside any experiment move nothing. The script is idempotent by ``event_id``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter

from streamrec.infra.experiments import JOIN_TTL_SECONDS, Moved
from streams.events import Click, Event, Interaction, RecommendationServed

INTERLEAVED = "interleaved"  # the served event's variant of an interleaved list
# joins the two sets' model versions of an interleaved list that mixed two sets
INTERLEAVED_VERSIONS = " & "


class ExperimentFold(Protocol):
    def fold(self, calls: list[list[Any]]) -> Moved: ...


def served_call(served: RecommendationServed, ttl: int = JOIN_TTL_SECONDS) -> list[Any] | None:
    """The script call for a served list, or None when it is in no experiment."""
    if served.experiment is None:
        return None
    mode = "interleave" if served.variant == INTERLEAVED else "ab"
    teams: list[Any] = []
    for item in served.items:
        teams += [item.item_id, item.variant or served.variant]
    return [
        "served",
        served.event_id,
        ttl,
        served.request_id,
        served.experiment,
        mode,
        served.variant,
        served.user_id,
        served.event_time,
        len(served.items),
        *teams,
    ]


def click_call(click: Click, ttl: int = JOIN_TTL_SECONDS) -> list[Any]:
    return ["click", click.event_id, ttl, click.request_id, click.item_id, click.event_time]


def interaction_call(interaction: Interaction, ttl: int = JOIN_TTL_SECONDS) -> list[Any]:
    return [
        "interaction",
        interaction.event_id,
        ttl,
        interaction.user_id,
        interaction.item_id,
        interaction.event_time,
    ]


def fold_calls(events: Iterable[Event]) -> list[list[Any]]:
    """The script calls for a batch's events, in batch order."""
    calls: list[list[Any]] = []
    for event in events:
        if isinstance(event, RecommendationServed):
            call = served_call(event)
            if call is not None:
                calls.append(call)
        elif isinstance(event, Click):
            calls.append(click_call(event))
        elif isinstance(event, Interaction):
            calls.append(interaction_call(event))
    return calls


@dataclass
class ExperimentMetrics:
    """The counters as Prometheus sees them: one series per experiment, variant and count.

    Labels are bounded: experiment and variant names are admin-made (the API caps them).
    """

    events: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ExperimentMetrics:
        return cls(
            events=Counter(
                "streamrec_experiment_events",
                "Experiment counters folded by the worker: impressions, clicks, item "
                "impressions and clicks, conversions and interleaving wins (may decrease "
                "by one when a later click changes a request's winner: see the admin table)",
                ["experiment", "variant", "what"],
                registry=registry,
            )
        )

    def moved(self, moved: Moved) -> None:
        for experiment, variant, what, delta in moved:
            if delta > 0:
                self.events.labels(experiment, variant, what).inc(delta)
