"""Helpers shared by the integration and end-to-end suites: settings per test, the
real services started by `streamrec services up`, and child processes of our commands."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from streamrec.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def isolated_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings against the running services, with topics, Feast project and folders of
    this test alone (the services themselves come from the environment)."""
    base = Settings()
    prefix = f"t{uuid.uuid4().hex[:10]}."
    values: dict[str, Any] = {
        "topic_prefix": prefix,
        "state_dir": tmp_path / "state",
        "data_dir": tmp_path / "data",
        "worker_port": free_port(),
        "api_port": free_port(),
        "kafka_jars_dir": base.kafka_jars_dir.resolve(),
    }
    values.update(overrides)
    return base.model_copy(update=values).resolved()


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process load exactly these settings."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"STREAMREC_{name.upper()}"] = str(value)
    return env


def require_services(settings: Settings) -> None:
    """Fail (not skip) with instructions when the broker or Redis is not running."""
    import redis
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    try:
        AdminClient({"bootstrap.servers": settings.bootstrap_servers}).list_topics(timeout=5)
        redis.Redis.from_url(settings.redis_connection_url or "").ping()
    except (KafkaException, redis.RedisError) as exc:
        raise RuntimeError(
            "integration tests need the real services: run `make test` (or "
            f"`streamrec services up` with the same STREAMREC_* ports): {exc}"
        ) from exc


@contextmanager
def streamrec_process(settings: Settings, *args: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run `streamrec ARGS` as a child with these settings; killed on exit."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamrec.cli", *args], cwd=REPO_ROOT,
            env=settings_env(settings), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_until(
    probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2,
    proc: subprocess.Popen[bytes] | None = None, log: Path | None = None,
) -> T:
    """Poll until probe returns something truthy; fail saying what never happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(interval)
    tail = ""
    if log is not None and log.exists():
        tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:])
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{tail}")
