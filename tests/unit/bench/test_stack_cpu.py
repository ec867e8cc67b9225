"""The load test's CPU per request: processes named by the ports they listen on."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.stack_cpu import CpuShare, listeners, measure_cpu
from streamrec.infra.processes import free_port

# A process that listens on a port and, when told, burns CPU in a child of its own (the
# shape of `streamrec serve --workers N`: the work may be in a child of the listener).
LISTENER = """
import socket, subprocess, sys, time
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen()
burn = sys.argv[2] == "burn"
child = subprocess.Popen([sys.executable, "-c", "import sys, time\\n"
    "deadline = time.time() + 60\\n"
    "while time.time() < deadline:\\n"
    "    if sys.argv[1] == 'burn': sum(range(10000))\\n"
    "    else: time.sleep(0.5)\\n", sys.argv[2]])
print("ready", flush=True)
child.wait()
"""


@contextmanager
def listening(port: int, mode: str) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-c", LISTENER, str(port), mode], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        yield process
    finally:
        for child in __import__("psutil").Process(process.pid).children(recursive=True):
            child.kill()
        process.kill()
        process.wait()


def test_each_role_counts_its_listener_and_children_and_nothing_else() -> None:
    busy_port, idle_port, nobody = free_port(), free_port(), free_port()
    with listening(busy_port, "burn") as busy, listening(idle_port, "idle") as idle:
        found = listeners({"api": [busy_port], "redis": [idle_port], "kafka": [nobody]})
        assert {p.pid for p in found["api"]} >= {busy.pid}
        assert len(found["api"]) == 2  # the listener and its child
        assert {p.pid for p in found["redis"]} >= {idle.pid}
        assert "kafka" not in found  # nothing listens there
        ports = {"api": [busy_port], "redis": [idle_port]}
        with measure_cpu(ports) as share:
            time.sleep(1.0)
    # the child burned CPU for a second (a share of a core on a busy machine), the idle one
    # slept
    assert share.by_role["api"] > 0.15
    assert share.by_role["redis"] < 0.05
    assert share.machine_busy >= share.by_role["api"]
    assert 0 < share.busy_share <= 1


def test_the_line_divides_by_the_requests_and_names_the_rest() -> None:
    share = CpuShare({"api": 2.0, "worker": 0.5}, machine_busy=3.0, machine_total=4.0)
    line = share.per_request_line(1000)
    assert line.startswith("  CPU-ms per request: api 2.0 · worker 0.5 · rest 0.5 · machine 3.0")
    assert "busy 75%" in line
    assert share.per_request_line(0) == "  CPU per request: no requests"


def test_a_role_named_by_a_pid_file_counts_its_process_and_children(tmp_path: Path) -> None:
    with listening(free_port(), "burn") as busy:
        (tmp_path / "spark.pid").write_text(f"{busy.pid}\n")
        (tmp_path / "archiver.pid").write_text("not a pid\n")
        files = {
            "spark": tmp_path / "spark.pid",
            "archiver": tmp_path / "archiver.pid",
            "gone": tmp_path / "gone.pid",
        }
        with measure_cpu({}, files) as share:
            time.sleep(1.0)
    assert share.by_role["spark"] > 0.15  # its child burned CPU
    assert "archiver" not in share.by_role and "gone" not in share.by_role
