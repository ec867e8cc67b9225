"""Running `streamrec` subcommands as child processes with a given Settings object.

Used by the end-to-end tests and the benchmarks, which start the worker and the API
the way an operator would.

Each child runs in its own session (process group), and the whole group is stopped when
the child is done, also when it failed, timed out or exited first: a command's own
children (a local Ray's raylet and workers, a Spark JVM) are never left behind as orphans
of PID 1.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
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


# Where free ports are drawn: below the kernel's ephemeral range. A port the kernel hands
# out for port 0 comes from that range, and so does every outgoing connection's local port:
# between the draw and the service's bind a client could take it (a test's own Prometheus,
# started a few seconds after its port was drawn, found it taken).
LISTEN_PORTS_LOW = 20_000
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_low() -> int:
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


# Ports this process handed out: a service's ports are drawn one after the other before it
# binds any, so a draw must not repeat one (a broker's listener and controller were once
# drawn the same port).
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, drawn below the ephemeral
    range (where no outgoing connection takes it meanwhile) when that range leaves room,
    never one this process handed out before."""
    high = _ephemeral_low()
    if high - LISTEN_PORTS_LOW >= 1_000:
        draw = random.Random()
        for _ in range(50):
            port = draw.randrange(LISTEN_PORTS_LOW, high)
            if port in _HANDED_OUT:
                continue
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
                _HANDED_OUT.add(port)
                return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def streamrec_process(
    settings: Settings, *args: str, log: Path, root: Path = REPO_ROOT
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `streamrec ARGS` as a child with these settings; stopped on exit. ``root``: a
    copy of the repository to run instead (another revision, for a benchmark)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = settings_env(settings)
    if root != REPO_ROOT:
        env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamrec.cli", *args],
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    failed = False
    try:
        yield proc
    except BaseException:
        failed = True
        raise
    finally:
        stop_process(proc)
        if failed:  # what the child said is the first thing a failed test's reader wants
            sys.stderr.write(
                f"--- the end of `streamrec {' '.join(args)}`'s output ({log}) ---\n"
                f"{log_tail(log)}\n"
            )


def log_tail(log: Path, chars: int = 6_000) -> str:
    """The last ``chars`` characters of ``log``; empty when it is missing."""
    try:
        with log.open("rb") as file:
            file.seek(max(0, file.seek(0, os.SEEK_END) - chars))
            return file.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def stop_process(
    proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float = 15.0
) -> None:
    """Stop ``proc`` and everything left in its process group."""
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
    stop_group(proc.pid, timeout)


def stop_group(pgid: int, timeout: float = 15.0) -> None:
    """SIGTERM what is left in process group ``pgid``, then SIGKILL after ``timeout``."""
    if not _signal_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _signal_group(pgid, 0):
            return
        time.sleep(0.1)
    _signal_group(pgid, signal.SIGKILL)


def _signal_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` to the group; False when no process of it is left."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    return True


class CommandFailed(RuntimeError):
    """A `streamrec` subcommand exited non-zero; the message holds its output."""


def run_streamrec(settings: Settings, *args: str, timeout: float = 600) -> str:
    """Run `streamrec ARGS` to completion with these settings; returns its output."""
    returncode, output = run_command(
        [sys.executable, "-m", "streamrec.cli", *args], env=settings_env(settings), timeout=timeout
    )
    if returncode != 0:
        raise CommandFailed(f"streamrec {' '.join(args)} exited {returncode}:\n{output}")
    return output


def run_command(
    argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 600
) -> tuple[int, str]:
    """Run ``argv`` in its own process group to completion; returns (exit code, its output,
    stdout and stderr interleaved). Whatever it started is stopped with it; a timeout raises
    TimeoutExpired."""
    # Output goes to a file, not a pipe: a grandchild that inherited the pipe would keep it
    # open, and reading to its end would wait for that grandchild.
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process(proc)
            raise
        finally:
            stop_group(proc.pid)
        out.seek(0)
        output = out.read()
    return proc.returncode, output
