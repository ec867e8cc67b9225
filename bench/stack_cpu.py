"""Where a load test's CPU goes: each process of the stack, per request served.

Serving a list costs more than the API's own CPU: the served-slate event is written by the
broker, folded by the worker (the impression join rewrites the listed items' rows in
Redis), and the load generator runs on the same two cores. On a machine this small the
question "can the API take 400/s" is "do all of these fit in two cores at 400/s", so the
load test reports, for each run, the CPU seconds of each process over the run divided by
the requests sent, and the machine's busy share.

The processes are found by the ports they listen on (the settings' broker, Redis,
Prometheus and worker ports, the API's URL), so another stack on the same machine (a
test run on other ports) is not counted as this one; each counts with its children
(``streamrec serve --workers N``). The demo's processes that listen on no port, the Spark
windows job (its JVM is its child) and the archiver, are found by the pid files ``make
demo`` writes in the settings' state directory. The load generator and anything else this
process started and waited for count as ``load generator`` (``RUSAGE_CHILDREN``); ``rest``
is the machine's busy time outside all of these (the OS, other jobs).
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import psutil

from streamrec.settings import Settings


def stack_ports(settings: Settings, api_url: str) -> dict[str, list[int]]:
    """Each role's listening ports: what names its processes."""
    api_port = urlparse(api_url).port or 80
    return {
        "api": [api_port],
        "worker": [settings.worker_port],
        "kafka": list(settings.local_broker_ports),
        "redis": [settings.redis_port],
        "prometheus": [settings.prometheus_port],
    }


def stack_pid_files(settings: Settings) -> dict[str, Path]:
    """The pid files of the demo's processes that listen on no port."""
    return {role: settings.state_dir / f"{role}.pid" for role in ("spark", "archiver")}


def _family(pid: int) -> list[psutil.Process]:
    process = psutil.Process(pid)
    return [process, *process.children(recursive=True)]


def pid_file_processes(pid_files: Mapping[str, Path]) -> dict[str, list[psutil.Process]]:
    """The processes named by each role's pid file, with their children; a role whose file
    is missing or names no live process is left out."""
    found: dict[str, list[psutil.Process]] = {}
    for role, path in pid_files.items():
        try:
            found[role] = _family(int(path.read_text().strip()))
        except (OSError, ValueError, psutil.NoSuchProcess):
            continue
    return found


def listeners(ports: Mapping[str, list[int]]) -> dict[str, list[psutil.Process]]:
    """The processes listening on each role's ports, with their children; a role with no
    listener (the worker not running) is left out."""
    wanted = {port: role for role, role_ports in ports.items() for port in role_ports}
    found: dict[str, dict[int, psutil.Process]] = {}
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        # Another user's processes' sockets (some systems): the line then has the load
        # generator, the rest and the machine only.
        return {}
    for connection in connections:
        if connection.status != psutil.CONN_LISTEN or connection.pid is None:
            continue
        role = wanted.get(connection.laddr.port)
        if role is None:
            continue
        try:
            family = _family(connection.pid)
        except psutil.NoSuchProcess:
            continue
        for member in family:
            found.setdefault(role, {})[member.pid] = member
    return {role: list(members.values()) for role, members in found.items()}


def _cpu(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return times.user + times.system


def machine_busy() -> tuple[float, float]:
    """(busy CPU seconds, all CPU seconds) of the machine since boot."""
    times = psutil.cpu_times()
    total = sum(times)
    idle = times.idle + getattr(times, "iowait", 0.0)
    return total - idle, total


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuShare:
    """CPU seconds per role over one window, and the machine's."""

    by_role: dict[str, float] = field(default_factory=dict)
    machine_busy: float = 0.0
    machine_total: float = 0.0

    @property
    def busy_share(self) -> float:
        return self.machine_busy / self.machine_total if self.machine_total else 0.0

    def per_request_line(self, requests: int) -> str:
        """``  CPU-ms per request: api 3.1 · worker 1.0 · ... · machine 6.2 (busy 81 %)``."""
        if requests <= 0:
            return "  CPU per request: no requests"
        rest = self.machine_busy - sum(self.by_role.values())
        parts = [
            f"{role} {seconds * 1000 / requests:.1f}" for role, seconds in self.by_role.items()
        ]
        parts.append(f"rest {max(rest, 0.0) * 1000 / requests:.1f}")
        return (
            "  CPU-ms per request: "
            + " · ".join(parts)
            + f" · machine {self.machine_busy * 1000 / requests:.1f}"
            + f" (busy {self.busy_share:.0%} of {psutil.cpu_count()} CPUs)"
        )


@contextmanager
def measure_cpu(
    ports: Mapping[str, list[int]], pid_files: Mapping[str, Path] | None = None
) -> Iterator[CpuShare]:
    """The CPU each role's processes (found at the start, by port or pid file) and this
    process's waited-for children spent while the context was open; filled in when it
    closes."""
    share = CpuShare()
    processes = listeners(ports) | pid_file_processes(pid_files or {})
    # The machine's window opens first and closes last, so it holds every process's
    # (read the other way round, a process's tick could fall outside the machine's).
    busy_start, total_start = machine_busy()
    start = {
        role: {member.pid: _cpu(member) for member in members}
        for role, members in processes.items()
    }
    children_start = _children_cpu()
    yield share
    for role, members in processes.items():
        share.by_role[role] = sum(
            max(_cpu(member) - start[role][member.pid], 0.0) for member in members
        )
    share.by_role["load generator"] = _children_cpu() - children_start
    busy_end, total_end = machine_busy()
    share.machine_busy = _ticks(busy_end - busy_start)
    share.machine_total = _ticks(total_end - total_start)


def _ticks(seconds: float) -> float:
    """``seconds`` to the kernel's clock tick, in which every CPU time here is counted: the
    machine's are differences of sums since boot, off by float rounding (1.0099999999947
    for 1.01 s)."""
    hz = os.sysconf("SC_CLK_TCK")
    return round(seconds * hz) / hz  # as psutil computes a process's: ticks / hz
