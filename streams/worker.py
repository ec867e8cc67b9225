"""Run the stream worker: the Faust app with the real Feast and Redis adapters."""

from __future__ import annotations

import asyncio
import signal
import sys

import faust
from mode.utils.times import want_seconds

from streamrec.settings import Settings


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Build the app with the real Feast and Redis adapters and run it until stopped."""
    keep_torch_out()
    from streamrec.infra.experiments import RedisExperimentFold
    from streamrec.infra.feast_store import apply_definitions, open_store
    from streamrec.infra.gc_tuning import freeze_startup_heap
    from streamrec.infra.seen import RedisSeenItems
    from streams.agents import attach
    from streams.app import create_app
    from streams.diagnostics import log_tasks
    from streams.sinks import FeastFeatureSink, RedisChangeNotifier
    from streams.topics import ensure_named_topics, item_activity_topic

    redis_url = settings.redis_connection_url
    if redis_url is None:
        raise SystemExit("the worker needs Redis for its change notices; set STREAMREC_REDIS_URL")
    store = open_store(settings)
    apply_definitions(store)
    # The item agent's topic exists, and the broker lists it, before the consumer joins its
    # group. Faust would create it a moment before subscribing; a broker slow to list it
    # then left it out of the assignment until the next metadata refresh (minutes): the
    # item side folded nothing.
    ensure_named_topics(
        settings.bootstrap_servers,
        [item_activity_topic(settings.topic_prefix)],
        settings.topic_partitions,
        replication_factor=settings.replication_factor,
        security=settings.kafka_security(),
    )
    app = create_app(settings)
    attach(
        app,
        settings,
        FeastFeatureSink(store),
        RedisChangeNotifier(redis_url, settings.topic_prefix),
        RedisSeenItems(redis_url, settings.topic_prefix),
        RedisExperimentFold(redis_url, settings.topic_prefix),
    )
    # Likewise every table's changelog topic, as Faust declares it: a changelog the broker
    # did not list yet when the consumer joined stayed at 0 partitions in the consumer's
    # snapshot, and the table's first write raised PartitionsMismatch in its agent at
    # every restart until the next metadata refresh (the join's table; fresh-clone
    # `make test`, test_worker).
    for name, partitions, config in changelog_topics(app):
        ensure_named_topics(
            settings.bootstrap_servers,
            [name],
            partitions,
            config,
            replication_factor=settings.replication_factor,
            security=settings.kafka_security(),
        )
    # After the imports and the app are built: what exists now lives as long as the
    # process (streamrec.infra.gc_tuning).
    freeze_startup_heap()
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)

    @app.task
    async def dump_tasks_on_signal() -> None:
        # `kill -USR1 <pid>` logs where every coroutine waits (streams.diagnostics).
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, log_tasks, app)

    worker.execute_from_commandline()


def changelog_topics(app: faust.App) -> list[tuple[str, int, dict[str, str]]]:
    """Each table's changelog topic as Faust would create it (``Topic.declare`` and its
    Kafka transport's ``_topic_config``): name, partitions and configuration."""
    found: list[tuple[str, int, dict[str, str]]] = []
    for table in app.tables.values():
        topic = table.changelog_topic
        config = {str(key): str(value) for key, value in (topic.config or {}).items()}
        policy = [
            flag for flag, on in (("compact", topic.compacting), ("delete", topic.deleting)) if on
        ]
        if policy:
            config["cleanup.policy"] = ",".join(policy)
        if topic.retention:
            config["retention.ms"] = str(int(want_seconds(topic.retention) * 1000.0))
        partitions = topic.partitions or app.conf.topic_partitions
        found.extend((name, partitions, config) for name in topic.topics)
    return found


def keep_torch_out() -> None:
    """Make ``import torch`` fail in this process, before Feast is imported.

    Feast imports torch as it is itself imported (``feast.torch_wrapper``), only for the
    tensors of ``to_tensor``, which the worker never asks for, and takes a failed import
    as "torch not installed". torch was about 480 of the worker's 730 MiB resident at
    start. A None in ``sys.modules`` is the import system's own way to refuse a module
    (``ModuleNotFoundError``); a torch already imported (a test process) stays.
    """
    sys.modules.setdefault("torch", None)  # type: ignore[arg-type]
