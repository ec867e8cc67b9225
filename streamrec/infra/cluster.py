"""`streamrec services up --brokers 3`: a replicated KRaft cluster of local JVMs.

Each node is a broker and a controller in one process, like the single broker, so three
JVMs make both a controller quorum and three replicas. Topics get three copies and
``min.insync.replicas=2``: with the producers' ``acks=all`` a write is acknowledged once
two nodes hold it, so losing any one node (even the leader, even by ``kill -9``) loses
no acknowledged record and keeps the log writable.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from streamrec.infra.services import (
    KafkaBroker,
    ServiceError,
    ServiceStatus,
    _is_zombie,
    _port_open,
    _Process,
    _wait_for,
    new_cluster_id,
)
from streamrec.settings import Settings

# Lower than Kafka's 9 s session so a dead node's partitions move to a live replica
# within a few seconds: what clients see as the length of an outage.
BROKER_SESSION_MS = 4000
BROKER_HEARTBEAT_MS = 500


class ClusterNode(KafkaBroker):
    """Node ``node_id`` (1-based) of a local cluster: its own ports, folder and pid file."""

    def __init__(self, settings: Settings, node_id: int) -> None:
        super().__init__(settings)
        self.node_id = node_id
        self.proc = _Process(f"kafka-{node_id}", settings.state_dir, marker="kafka.Kafka")
        self.data_dir = self.proc.dir / "data"
        self.config_file = self.proc.dir / "server.properties"

    @property
    def port(self) -> int:
        return self.settings.kafka_port + 2 * (self.node_id - 1)

    @property
    def controller_port(self) -> int:
        return self.settings.kafka_controller_port + 2 * (self.node_id - 1)

    def _write_config(self) -> None:
        s = self.settings
        nodes = range(1, s.kafka_brokers + 1)
        voters = ",".join(f"{n}@127.0.0.1:{s.kafka_controller_port + 2 * (n - 1)}" for n in nodes)
        replicas = s.replication_factor
        min_isr = 2 if replicas >= 3 else 1
        self.config_file.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    f"node.id={self.node_id}",
                    f"controller.quorum.voters={voters}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                    f"CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    f"log.dirs={self.data_dir}",
                    f"num.partitions={s.topic_partitions}",
                    f"default.replication.factor={replicas}",
                    f"min.insync.replicas={min_isr}",
                    # A replica that missed writes never becomes leader: no silent loss.
                    "unclean.leader.election.enable=false",
                    f"offsets.topic.replication.factor={replicas}",
                    "offsets.topic.num.partitions=10",
                    f"transaction.state.log.replication.factor={replicas}",
                    f"transaction.state.log.min.isr={min_isr}",
                    f"broker.session.timeout.ms={BROKER_SESSION_MS}",
                    f"broker.heartbeat.interval.ms={BROKER_HEARTBEAT_MS}",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=true",
                    "log.retention.hours=-1",
                    "",
                ]
            )
        )

    def healthy(self) -> bool:
        """This node answers metadata requests itself (so the quorum has a leader)."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        if not _port_open(self.port):
            return False
        try:
            metadata = AdminClient({"bootstrap.servers": f"127.0.0.1:{self.port}"}).list_topics(
                timeout=2
            )
        except KafkaException:
            return False
        return self.node_id in metadata.brokers

    def start(self, cluster_id: str) -> None:
        """Start this node's JVM without waiting: a node alone has no quorum to be healthy
        with, so the cluster waits for all of them together."""
        if self.proc.pid() is not None:
            return
        if _port_open(self.port) or _port_open(self.controller_port):
            raise ServiceError(
                f"port {self.port} or {self.controller_port} is taken by another process; "
                "set STREAMREC_KAFKA_PORT / STREAMREC_KAFKA_CONTROLLER_PORT to free ports "
                "(node i uses both plus 2i)"
            )
        jars = self.ensure_jars()
        self.proc.dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        if not (self.data_dir / "meta.properties").exists():
            self.format_storage(jars, cluster_id)
        self.proc.start(
            self._java(jars, "kafka.Kafka", str(self.config_file), heap=self.settings.kafka_heap)
        )

    def up(self) -> None:
        """Restart this node into its existing cluster (the others keep the quorum)."""
        self.start(self._cluster_id())
        _wait_for(self.healthy, f"Kafka node {self.node_id}", 90, self.proc.log_file)

    def kill(self) -> int:
        """``kill -9`` this node's JVM (a crash: no controlled shutdown); returns its pid."""
        pid = self.proc.pid()
        if pid is None:
            raise ServiceError(f"Kafka node {self.node_id} is not running")
        os.kill(pid, signal.SIGKILL)
        # gone, or a zombie until whoever started it reaps it: dead either way
        _wait_for(lambda: _is_zombie(pid), f"node {self.node_id} to die", 10)
        return pid

    def _cluster_id(self) -> str:
        meta = self.data_dir / "meta.properties"
        if meta.exists():
            for line in meta.read_text().splitlines():
                if line.startswith("cluster.id="):
                    return line.partition("=")[2]
        return new_cluster_id()

    def status(self) -> ServiceStatus:
        pid = self.proc.pid()
        healthy = pid is not None and self.healthy()
        return ServiceStatus(
            f"kafka-{self.node_id}",
            healthy,
            pid,
            f"127.0.0.1:{self.port}",
            "" if healthy else ("not healthy" if pid else "stopped"),
        )


def nodes_in(state_dir: Path) -> int:
    """How many nodes the cluster under ``state_dir`` has, if one of them runs; else 0."""
    numbers = [
        int(folder.name.removeprefix("kafka-"))
        for folder in state_dir.glob("kafka-*")
        if folder.name.removeprefix("kafka-").isdigit()
    ]
    running = any(
        _Process(f"kafka-{n}", state_dir, marker="kafka.Kafka").pid() is not None for n in numbers
    )
    return max(numbers) if running else 0


class _Nodes:
    """The cluster's processes, stopped together (what `services down` calls)."""

    name = "kafka"

    def __init__(self, nodes: list[ClusterNode]) -> None:
        self._nodes = nodes

    def pid(self) -> int | None:
        return next((p for n in self._nodes if (p := n.proc.pid()) is not None), None)

    def stop(self, timeout: float = 30.0) -> bool:
        # In reverse, so the last node standing is a controller the others left cleanly.
        return any([node.proc.stop(timeout) for node in reversed(self._nodes)])


class KafkaCluster:
    """``settings.kafka_brokers`` local KRaft nodes forming one cluster."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.nodes = [ClusterNode(settings, n) for n in range(1, settings.kafka_brokers + 1)]
        self.proc = _Nodes(self.nodes)

    def ensure_jars(self) -> Path:
        return self.nodes[0].ensure_jars()

    def node(self, node_id: int) -> ClusterNode:
        return self.nodes[node_id - 1]

    def healthy(self) -> bool:
        return all(node.healthy() for node in self.nodes)

    def up(self) -> None:
        # One id for all: a node formatted with another cluster's id would never join.
        ids = {
            node._cluster_id()
            for node in self.nodes
            if (node.data_dir / "meta.properties").exists()
        }
        if len(ids) > 1:
            raise ServiceError(
                f"the nodes under {self.settings.state_dir} belong to different clusters "
                f"({', '.join(sorted(ids))}); remove their folders to start a new one"
            )
        cluster_id = ids.pop() if ids else new_cluster_id()
        for node in self.nodes:
            node.start(cluster_id)
        for node in self.nodes:
            _wait_for(node.healthy, f"Kafka node {node.node_id}", 120, node.proc.log_file)

    def leader(self, topic: str, partition: int) -> int:
        """The node id that leads ``topic``'s ``partition`` now (-1 while it has none)."""
        from confluent_kafka.admin import AdminClient

        metadata = AdminClient({"bootstrap.servers": self.settings.bootstrap_servers}).list_topics(
            topic, timeout=10
        )
        return int(metadata.topics[topic].partitions[partition].leader)

    def in_sync(self, topic: str) -> bool:
        """Every partition of ``topic`` has all its replicas in sync."""
        from confluent_kafka.admin import AdminClient

        metadata = AdminClient({"bootstrap.servers": self.settings.bootstrap_servers}).list_topics(
            topic, timeout=10
        )
        partitions = metadata.topics[topic].partitions.values()
        return bool(partitions) and all(len(p.isrs) == len(p.replicas) for p in partitions)

    def status(self) -> ServiceStatus:
        statuses = [node.status() for node in self.nodes]
        down = [s.name for s in statuses if not s.running]
        return ServiceStatus(
            "kafka",
            not down,
            self.proc.pid(),
            self.settings.bootstrap_servers,
            f"{len(statuses) - len(down)}/{len(statuses)} nodes up"
            + (f"; down: {', '.join(down)}" if down else ""),
        )
