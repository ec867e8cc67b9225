"""``streamrec monitor``: a stream consumer of interactions, served lists and clicks that
feeds :class:`training.monitoring.monitor.MonitorState`, runs ``streamrec retrain`` when it
asks, and logs every decision to the ``monitor`` topic.

A stream consumer, not a job over the archive: online quality pairs each interaction with
the list served to that user just before it, which is the order the log received them
(the archive is sorted by event time, and a replayed interaction's event time is years
before the list's), and the bound on events to detection is a count of live records.
"""

from __future__ import annotations

import json
import logging
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, Message, TopicPartition

from streamrec.infra.experiments import ExperimentStore
from streamrec.settings import Settings
from streams.events import (
    Click,
    EventRejected,
    Interaction,
    RecommendationServed,
    Topics,
    decode,
)
from streams.producer import EventProducer
from training.canary import NoCanary, canary_definition, check_canary, start_canary
from training.monitoring.metrics import MonitorMetrics
from training.monitoring.monitor import MonitorConfig, MonitorState, RetrainOutcome
from training.monitoring.reference import MonitoredSet

log = logging.getLogger(__name__)

RELOAD_SECONDS = 15.0  # how often the champion is looked up again


class Retrainer:
    """Runs ``streamrec retrain ARGS`` as a child process, one at a time; its outcome is
    queued for the consuming thread."""

    def __init__(self, settings: Settings, args: Sequence[str], workdir: Path) -> None:
        self.settings = settings
        self.args = list(args)
        self.workdir = workdir
        self.outcomes: queue.Queue[RetrainOutcome] = queue.Queue()
        self._runs = 0
        self._thread: threading.Thread | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("a retrain is already running")
        self._runs += 1
        self._thread = threading.Thread(target=self._run, args=(self._runs,), daemon=True)
        self._thread.start()

    def _run(self, number: int) -> None:
        from streamrec.infra.processes import settings_env

        report_dir = self.workdir / f"retrain-{number}"
        report_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "streamrec.cli",
            "retrain",
            "--report-dir",
            str(report_dir),
            *self.args,
        ]
        log.info("monitor: running %s", " ".join(command))
        started = time.monotonic()
        with (report_dir / "retrain.log").open("wb") as out:
            self.process = subprocess.Popen(
                command, env=settings_env(self.settings), stdout=out, stderr=subprocess.STDOUT
            )
            code = self.process.wait()
        seconds = time.monotonic() - started
        self.outcomes.put(read_outcome(report_dir, code, seconds))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            from streamrec.infra.processes import stop_process

            stop_process(self.process)


def read_outcome(report_dir: Path, code: int, seconds: float) -> RetrainOutcome:
    report_path = report_dir / "eval.json"
    if code != 0 or not report_path.exists():
        tail = ""
        log_path = report_dir / "retrain.log"
        if log_path.exists():
            lines = log_path.read_text(errors="replace").strip().splitlines()
            tail = lines[-1] if lines else ""
        return RetrainOutcome(False, seconds, reason=f"streamrec retrain exited {code}: {tail}")
    report = json.loads(report_path.read_text())
    gate = report["gate"]
    return RetrainOutcome(
        True,
        seconds,
        set_id=report["set_id"],
        promoted=bool(gate["promoted"]),
        challenger=bool(gate.get("challenger")),
        reason=gate["reason"],
    )


@dataclass(frozen=True)
class CanaryPolicy:
    """How the monitor runs the canary of a retrained set that became ``challenger``
    (``streamrec canary`` and ``streamrec promote``'s options)."""

    share: float = 0.1
    margin: float = 0.01
    min_lists: int = 1000
    alpha: float = 0.05
    check_seconds: float = 5.0


class CanaryDriver:
    """Starts the canary after a retrain whose set became ``challenger`` and decides it at
    its horizon; a canary started by hand (``streamrec canary``) is decided the same way."""

    def __init__(self, policy: CanaryPolicy, store: ExperimentStore, client: Any) -> None:
        self.policy = policy
        self.store = store
        self.client = client  # an MlflowClient
        self._checked = 0.0

    def start(self, state: MonitorState, outcome: RetrainOutcome) -> None:
        try:
            start_canary(self.store, canary_definition(self.policy.share))
        except Exception:  # Redis away: the challenger waits for `streamrec canary`
            log.exception("monitor: the canary of %s could not be started", outcome.set_id)
            return
        state.canary(
            "started",
            f"challenger {outcome.set_id} serves {self.policy.share:.0%} of users; decided "
            f"after {self.policy.min_lists} lists per side at a CTR margin of "
            f"{self.policy.margin}",
            outcome.set_id,
        )

    def due(self) -> bool:
        return time.monotonic() - self._checked >= self.policy.check_seconds

    def check(self, state: MonitorState) -> bool:
        """Decide a running canary; True when the aliases moved (promoted or rolled back)."""
        self._checked = time.monotonic()
        try:
            result = check_canary(
                self.store,
                self.client,
                margin=self.policy.margin,
                min_lists=self.policy.min_lists,
                alpha=self.policy.alpha,
            )
        except NoCanary as exc:
            log.warning("monitor: the canary cannot be decided: %s", exc)
            return False
        except Exception:  # Redis or MLflow away: the monitor keeps reading, and asks again
            log.exception(
                "monitor: the canary check failed; next in %.0f s", self.policy.check_seconds
            )
            return False
        if result is None or result.decision.action == "wait":
            return False
        outcome = "promoted" if result.decision.action == "promote" else "rolled_back"
        state.canary(outcome, result.decision.reason, result.set_id)
        return True


def _start_at_end(consumer: Consumer, partitions: list[TopicPartition]) -> None:
    """Resume from committed offsets; a partition the group never committed starts at its
    end: the monitor watches the traffic that comes after it starts."""
    committed = consumer.committed(partitions, timeout=10)
    for tp in committed:
        if tp.offset == OFFSET_INVALID or tp.offset < 0:
            _low, high = consumer.get_watermark_offsets(tp, timeout=10)
            tp.offset = high
    consumer.assign(committed)


def run_monitor(
    settings: Settings,
    config: MonitorConfig,
    metrics: MonitorMetrics,
    retrainer: Retrainer,
    load_champion: Callable[[], MonitoredSet | None],
    stop: threading.Event,
    canary: CanaryDriver | None = None,
) -> MonitorState:
    topics = Topics(settings.topic_prefix)
    producer = EventProducer(settings.bootstrap_servers, topics)
    state = MonitorState(config, metrics, publish=producer.send, retrain=retrainer.start)
    consumer = Consumer(
        settings.kafka_client_config(
            **{"group.id": f"{settings.topic_prefix}monitor", "auto.offset.reset": "latest"}
        )
    )
    assigned: set[tuple[str, int]] = set()

    def on_assign(consumer: Consumer, partitions: list[TopicPartition]) -> None:
        _start_at_end(consumer, partitions)
        assigned.update((tp.topic, tp.partition) for tp in partitions)
        state.metrics.assigned.set(len(assigned))

    def on_revoke(consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assigned.difference_update((tp.topic, tp.partition) for tp in partitions)
        state.metrics.assigned.set(len(assigned))

    state.set_serving(load_champion())
    reloaded = time.monotonic()
    kinds: dict[str, Any] = {
        topics.interactions: Interaction,
        topics.recommendations: RecommendationServed,
        topics.clicks: Click,
    }
    try:
        consumer.subscribe(list(kinds), on_assign=on_assign, on_revoke=on_revoke)
        while not stop.is_set():
            messages = consumer.consume(num_messages=500, timeout=0.5)
            # One batch holds several partitions: take it in the order the log received it.
            messages.sort(key=lambda m: m.timestamp()[1])
            for message in messages:
                _handle(state, kinds, message)
            while not retrainer.outcomes.empty():
                outcome = retrainer.outcomes.get()
                state.retrain_done(outcome)
                if outcome.challenger and canary is not None:
                    canary.start(state, outcome)
                state.set_serving(load_champion())
                reloaded = time.monotonic()
            if canary is not None and canary.due() and canary.check(state):
                state.set_serving(load_champion())
                reloaded = time.monotonic()
            if time.monotonic() - reloaded > RELOAD_SECONDS:
                state.set_serving(load_champion())
                reloaded = time.monotonic()
    finally:
        retrainer.stop()
        consumer.close()
        producer.close()
    return state


def _handle(state: MonitorState, kinds: dict[str, Any], message: Message) -> None:
    error = message.error()
    if error is not None:
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("monitor: consumer error %s", error)
        return
    topic = message.topic() or ""
    try:
        event = decode(kinds[topic], message.value())
    except EventRejected as exc:
        # The worker dead-letters it; the monitor only has to skip it.
        log.info("monitor: skipped a record of %s at %s: %s", topic, message.offset(), exc.reason)
        return
    received_ms = message.timestamp()[1]
    if isinstance(event, Interaction):
        state.interaction(event.user_id, event.item_id, event.action, received_ms)
    elif isinstance(event, RecommendationServed):
        ordered = sorted(event.items, key=lambda i: i.rank)
        items = [item.item_id for item in ordered]
        din = [item.din_score for item in ordered]
        state.served(event.user_id, event.model_version, items, received_ms, din)
    elif isinstance(event, Click):
        state.click(event.rank)
