"""Running `streamrec` subcommands as child processes with a given Settings object.

Used by the end-to-end tests and the benchmarks, which start the worker and the API
the way an operator would.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from streamrec.paths import REPO_ROOT
from streamrec.settings import Settings


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process load exactly these settings."""
    env = dict(os.environ)
    # Importing feast switches prometheus_client to multiprocess mode by setting these in
    # os.environ (pointing at a temp dir feast deletes at exit); a child must not inherit
    # that, or its metrics would live in the parent's soon-deleted folder.
    for name in ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR"):
        if "feast_metrics_" in env.get(name, ""):
            del env[name]
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"STREAMREC_{name.upper()}"] = str(value)
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def streamrec_process(
    settings: Settings, *args: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `streamrec ARGS` as a child with these settings; stopped on exit."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamrec.cli", *args],
            cwd=REPO_ROOT,
            env=settings_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
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


class CommandFailed(RuntimeError):
    """A `streamrec` subcommand exited non-zero; the message holds its output."""


def run_streamrec(settings: Settings, *args: str, timeout: float = 600) -> str:
    """Run `streamrec ARGS` to completion with these settings; returns its output."""
    result = subprocess.run(
        [sys.executable, "-m", "streamrec.cli", *args],
        cwd=REPO_ROOT,
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise CommandFailed(f"streamrec {' '.join(args)} exited {result.returncode}:\n{output}")
    return output
