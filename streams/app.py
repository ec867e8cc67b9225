"""The Faust app: one ``faust.App`` per worker process, built from settings.

The app is made by a factory rather than at import time (no configuration exists before
``create_app`` is called), so the agents are attached by ``streams.agents.attach``
instead of autodiscovery. The patches of Faust's consumer are installed here, and all
live in ``streams.faust_patches``.
"""

from __future__ import annotations

import time
from typing import Any

import faust
from faust.sensors.monitor import Monitor

from streamrec.settings import Settings
from streams import faust_patches
from streams.events import Topics


def create_app(settings: Settings) -> faust.App:
    topics = Topics(settings.topic_prefix)
    app = faust.App(
        f"{topics.prefix}worker",
        broker=f"kafka://{settings.bootstrap_servers}",
        broker_credentials=_credentials(settings),
        store="memory://",  # tables live in memory, recovered from their changelog topics
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.replication_factor,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        web_enabled=True,
        web_host=settings.worker_host,
        web_port=settings.worker_port,
        broker_commit_every=settings.worker_batch_size,
        # A worker killed without leaving its group holds its partitions until the session
        # times out; faust's 60 s default keeps a restarted worker idle that long.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
        # Let aiokafka gather the per-batch sends into few produce requests.
        producer_linger_ms=5,
        producer_max_batch_size=256 * 1024,
        stream_buffer_maxsize=4 * settings.worker_batch_size,
        datadir=str(settings.state_dir / "worker"),
        monitor=QuietMonitor(),
    )
    faust_patches.install(app)
    return app


def _credentials(settings: Settings) -> faust.SASLCredentials | faust.SSLCredentials | None:
    """Faust's (aiokafka's) form of the broker security in ``settings``."""
    import ssl

    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = None
    if protocol.endswith("SSL"):
        context = ssl.create_default_context(cafile=settings.kafka_ssl_ca_location or None)
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    password = settings.kafka_sasl_password
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=password.get_secret_value() if password else "",
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=context,
    )


class QuietMonitor(Monitor):
    """Faust's monitor without its statistics of every record and event.

    They feed only Faust's own web pages, and the worker keeps its own Prometheus
    metrics; kept per record, they were about 3 % of its time (py-spy). What Faust
    itself reads stays: when each partition's stream last took an event (its warning
    about a stream that stopped processing), and everything below the record level
    (commits, end offsets, tables, sends).
    """

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        self.stream_inbound_time[tp] = time.monotonic()
        return None

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None
