"""Rebuild the experiment counters from the log, with the worker's own fold.

The counters (``streamrec.infra.experiments``) are a function of the log: the served lists,
clicks and interactions of its three topics, turned into the counters' script calls by
``streams.experiments.fold_calls`` and folded by the same script the worker runs. Backfill
wipes the counters and their join state (never the definitions), then folds the log from
the beginning up to its end offsets as of the start, in two passes: the served lists and
clicks, then the interactions. That is the causal order (a user converts on an item after
it was recommended), the one the worker sees when it keeps up; a worker whose
interactions agent runs ahead of its recommendations agent (after a restart on a backlog)
can miss a conversion the backfill counts.

Only with the worker stopped: a running worker folds into the counters being rebuilt.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from streamrec.settings import Settings
from streams.backfill import Record, read_log
from streams.events import Click, EventRejected, Interaction, RecommendationServed, Topics, decode
from streams.experiments import ExperimentFold, fold_calls

# Reads the log: (topics) -> batches of records, from the beginning to the end offsets.
LogReader = Callable[[list[str]], Iterable[list[Record]]]


@dataclass
class CountersReport:
    lists: int = 0  # served lists of an experiment
    clicks: int = 0
    interactions: int = 0
    rejected: int = 0  # undecodable records, skipped as the worker does
    moved: int = 0  # counter increments the fold made

    def summary(self) -> str:
        return (
            f"experiment counters refolded from {self.lists:,} experiment lists, "
            f"{self.clicks:,} clicks and {self.interactions:,} interactions "
            f"({self.moved:,} counter moves, {self.rejected:,} rejected records)"
        )


def refold_counters(topics: Topics, read: LogReader, fold: ExperimentFold) -> CountersReport:
    """Fold the whole log into the (already wiped) counters with the worker's calls."""
    report = CountersReport()
    kinds: dict[str, type[Interaction | RecommendationServed | Click]] = {
        topics.recommendations: RecommendationServed,
        topics.clicks: Click,
        topics.interactions: Interaction,
    }
    for names in ([topics.recommendations, topics.clicks], [topics.interactions]):
        for batch in read(names):
            events = list(_decoded(batch, kinds, report))
            for event in events:
                if isinstance(event, RecommendationServed):
                    report.lists += event.experiment is not None
                elif isinstance(event, Click):
                    report.clicks += 1
                else:
                    report.interactions += 1
            report.moved += len(fold.fold(fold_calls(events)))
    return report


def _decoded(
    batch: list[Record],
    kinds: dict[str, type[Interaction | RecommendationServed | Click]],
    report: CountersReport,
) -> Iterator[Interaction | RecommendationServed | Click]:
    for topic, _partition, _offset, _key, value in batch:
        try:
            yield decode(kinds[topic], value)
        except EventRejected:
            report.rejected += 1  # the worker dead-letters it; backfill already did too


def backfill_counters(settings: Settings) -> CountersReport:
    """Wipe and rebuild the experiment counters in the settings' Redis from the log."""
    from confluent_kafka.admin import AdminClient

    from streamrec.infra.experiments import RedisExperimentFold

    group = f"{settings.topic_prefix}worker"
    admin = AdminClient(settings.kafka_client_config())
    description = admin.describe_consumer_groups([group], request_timeout=30)[group].result()
    if description.members:
        raise RuntimeError(
            f"consumer group {group} has running members: stop the worker before rebuilding "
            "the experiment counters"
        )
    if not settings.redis_connection_url:
        raise ValueError("the experiment counters live in Redis: STREAMREC_REDIS_URL is none")
    fold = RedisExperimentFold(settings.redis_connection_url, settings.topic_prefix)
    try:
        fold.wipe()

        def read(names: list[str]) -> Iterable[list[Record]]:
            return read_log(settings.bootstrap_servers, names, security=settings.kafka_security())

        return refold_counters(Topics(settings.topic_prefix), read, fold)
    finally:
        fold.close()
