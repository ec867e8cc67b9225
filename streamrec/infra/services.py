"""`streamrec services up|down|status`: a KRaft Kafka broker and a Redis server, for real.

Both run as plain processes from one state directory (data, logs, pid files). The
broker runs from the official jars that Maven fetches into a cache outside the repo.
`up` is idempotent: a service that is already healthy is left alone.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from streamrec.paths import REPO_ROOT
from streamrec.settings import Settings

if TYPE_CHECKING:
    from streamrec.infra.cluster import KafkaCluster

KAFKA_POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
KAFKA_LOG4J = REPO_ROOT / "deploy" / "kafka" / "log4j2.yaml"


class ServiceError(RuntimeError):
    """A service could not be started or reached; the message says what to do."""


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    pid: int | None
    address: str
    detail: str = ""


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _wait_for(check: object, what: str, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.25)
    tail = ""
    if log is not None and log.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    raise ServiceError(f"{what} did not become healthy within {timeout:.0f}s. Log tail:\n{tail}")


class _Process:
    """A background process with a pid file and a log file under the state directory."""

    def __init__(self, name: str, state_dir: Path, marker: str) -> None:
        self.name = name
        self.dir = state_dir / name
        self.pid_file = self.dir / f"{name}.pid"
        self.log_file = self.dir / f"{name}.log"
        self._marker = marker  # a string in the command line, so a reused pid isn't ours

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return None
        return pid if self._marker in cmdline else None

    def start(self, argv: list[str], env: dict[str, str] | None = None) -> int:
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
                cwd=self.dir,
            )
        self.pid_file.write_text(str(proc.pid))
        return proc.pid

    def stop(self, timeout: float = 30.0) -> bool:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            if _is_zombie(pid):
                break
            time.sleep(0.2)
        if Path(f"/proc/{pid}").exists() and not _is_zombie(pid):
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except (FileNotFoundError, IndexError):
        return True


def _require(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ServiceError(f"`{tool}` was not found on PATH. {hint}")
    return path


def fetch_maven_dependencies(pom: Path, jars: Path, what: str) -> None:
    """Copy ``pom``'s runtime dependencies into ``jars`` with Maven, unless a stamp of the
    pom's hash says they are already there (so later calls work offline, without Maven)."""
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    stamp = jars / ".pom-sha256"
    if stamp.exists() and stamp.read_text() == digest:
        return
    _require("java", "Install Java 17 (Debian: apt-get install openjdk-17-jre-headless).")
    mvn = _require("mvn", "Install Maven (Debian: apt-get install maven).")
    if jars.exists():
        shutil.rmtree(jars)
    jars.mkdir(parents=True)
    command = [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies"]
    command += [f"-DoutputDirectory={jars}", "-DincludeScope=runtime"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise ServiceError(f"Maven could not fetch {what}:\n{result.stdout}{result.stderr}")
    stamp.write_text(digest)


class KafkaBroker:
    """A single-node KRaft broker (broker and controller in one process)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.proc = _Process("kafka", settings.state_dir, marker="kafka.Kafka")
        self.data_dir = self.proc.dir / "data"
        self.config_file = self.proc.dir / "server.properties"

    @property
    def port(self) -> int:
        return self.settings.kafka_port

    def ensure_jars(self) -> Path:
        """Fetch the broker jars with Maven once per pom version; returns the jar folder."""
        fetch_maven_dependencies(KAFKA_POM, self.settings.kafka_jars_dir, "the Kafka jars")
        return self.settings.kafka_jars_dir

    def _write_config(self) -> None:
        s = self.settings
        self.config_file.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{s.kafka_controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{s.kafka_port},"
                    f"CONTROLLER://127.0.0.1:{s.kafka_controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{s.kafka_port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    f"log.dirs={self.data_dir}",
                    f"num.partitions={s.topic_partitions}",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=10",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=true",
                    "log.retention.hours=-1",
                    "",
                ]
            )
        )

    def _java(self, jars: Path, main: str, *args: str, heap: str = "256m") -> list[str]:
        java = _require(
            "java", "Install Java 17 (Debian: apt-get install openjdk-17-jre-headless)."
        )
        return [
            java,
            f"-Xmx{heap}",
            f"-Xms{heap}",
            "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={KAFKA_LOG4J}",
            "-cp",
            f"{jars}/*",
            main,
            *args,
        ]

    def format_storage(self, jars: Path, cluster_id: str) -> None:
        """Format the KRaft metadata and log folder for a new cluster (first start only)."""
        self.proc.dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        result = subprocess.run(
            self._java(
                jars,
                "kafka.tools.StorageTool",
                "format",
                # "=" form: a random id may start with "-", which would read as a flag.
                f"--cluster-id={cluster_id}",
                "-c",
                str(self.config_file),
            ),
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise ServiceError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")

    def healthy(self) -> bool:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        if not _port_open(self.port):
            return False
        try:
            AdminClient({"bootstrap.servers": self.settings.bootstrap_servers}).list_topics(
                timeout=2
            )
        except KafkaException:
            return False
        return True

    def up(self) -> None:
        if self.proc.pid() is not None:
            _wait_for(self.healthy, "Kafka", 60, self.proc.log_file)
            return
        if _port_open(self.port):
            raise ServiceError(
                f"port {self.port} is taken by another process; "
                "set STREAMREC_KAFKA_PORT to a free port"
            )
        jars = self.ensure_jars()
        self.proc.dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        if not (self.data_dir / "meta.properties").exists():
            self.format_storage(jars, new_cluster_id())
        self.proc.start(
            self._java(jars, "kafka.Kafka", str(self.config_file), heap=self.settings.kafka_heap)
        )
        _wait_for(self.healthy, "Kafka", 90, self.proc.log_file)

    def status(self) -> ServiceStatus:
        pid = self.proc.pid()
        healthy = pid is not None and self.healthy()
        return ServiceStatus(
            "kafka",
            healthy,
            pid,
            self.settings.bootstrap_servers,
            "" if healthy else ("not healthy" if pid else "stopped"),
        )


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding."""
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


class RedisServer:
    """Debian's redis-server, with its data under the state directory."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.proc = _Process("redis", settings.state_dir, marker="redis-server")

    @property
    def port(self) -> int:
        return self.settings.redis_port

    def healthy(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def up(self) -> None:
        if self.proc.pid() is not None:
            _wait_for(self.healthy, "Redis", 30, self.proc.log_file)
            return
        if _port_open(self.port):
            raise ServiceError(
                f"port {self.port} is taken by another process; "
                "set STREAMREC_REDIS_PORT to a free port"
            )
        server = _require(
            "redis-server",
            "Install it with `apt-get install redis-server` (`make install` does this).",
        )
        self.proc.dir.mkdir(parents=True, exist_ok=True)
        self.proc.start(
            [
                server,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.proc.dir),
                "--daemonize",
                "no",
                # The online store is derived state (rebuildable from the log); AOF keeps a
                # restart from having to backfill, and snapshots are off.
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
            ]
        )
        _wait_for(self.healthy, "Redis", 30, self.proc.log_file)

    def status(self) -> ServiceStatus:
        pid = self.proc.pid()
        healthy = pid is not None and self.healthy()
        return ServiceStatus(
            "redis",
            healthy,
            pid,
            f"127.0.0.1:{self.port}",
            "" if healthy else ("not healthy" if pid else "stopped"),
        )


def _kafka_for(settings: Settings) -> KafkaBroker | KafkaCluster:
    """One broker, or a replicated cluster with ``settings.kafka_brokers`` > 1."""
    if settings.kafka_brokers == 1:
        return KafkaBroker(settings)
    from streamrec.infra.cluster import KafkaCluster

    return KafkaCluster(settings)


class LocalServices:
    """The services one machine runs: `up`, `down`, `status`."""

    def __init__(self, settings: Settings) -> None:
        # Imported here: the Prometheus module builds on this one's process helpers.
        from streamrec.infra.prometheus import PrometheusServer

        self.settings = settings
        self.kafka: KafkaBroker | KafkaCluster = _kafka_for(settings)
        self.redis = RedisServer(settings)
        self.prometheus = PrometheusServer(settings)

    def up(self) -> None:
        """Start Redis, the broker and Prometheus; the CLI then creates the event topics."""
        self.redis.up()
        self.kafka.up()
        self.prometheus.up()

    def down(self) -> list[str]:
        stopped = []
        for service in (self.prometheus, self.kafka, self.redis):
            if service.proc.stop():
                stopped.append(service.proc.name)
        return stopped

    def status(self) -> list[ServiceStatus]:
        return [self.redis.status(), self.kafka.status(), self.prometheus.status()]
