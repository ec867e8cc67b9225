"""CPU time and memory of a measured process and everything it starts, sampled with psutil.

A stage of the pipeline is a `streamrec` command; some start children of their own (a
local Ray's raylet, GCS and workers). The sampler walks the process tree every
``interval`` seconds and keeps, per process, the last CPU time it saw, so a child that
exits between two samples still counts up to its last sample; the peak resident set is
the largest sum over the tree seen at one sample, and the root's own peak is the
kernel's high-water mark (``VmHWM``), read before it exits.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

import psutil


@dataclass(frozen=True)
class Sample:
    """One process seen at one sampling instant."""

    pid: int
    create_time: float  # with the pid, names a process even if the pid is reused
    cpu_seconds: float  # user + system, since the process started
    rss_bytes: int


@dataclass
class TreeUsage:
    """CPU seconds and peak memory of a process tree, folded from samples."""

    cpu_by_process: dict[tuple[int, float], float] = field(default_factory=dict)
    cpu_at_start: dict[tuple[int, float], float] = field(default_factory=dict)
    peak_tree_rss: int = 0
    processes_seen: int = 0

    def add(self, samples: Iterable[Sample]) -> None:
        """Fold one sampling instant: the tree's processes as they were at that moment."""
        total_rss = 0
        for sample in samples:
            key = (sample.pid, sample.create_time)
            if key not in self.cpu_by_process:
                self.processes_seen += 1
            self.cpu_by_process[key] = sample.cpu_seconds
            total_rss += sample.rss_bytes
        self.peak_tree_rss = max(self.peak_tree_rss, total_rss)

    def mark_start(self) -> None:
        """CPU time counts from now on (for processes already running when measured)."""
        self.cpu_at_start = dict(self.cpu_by_process)

    @property
    def cpu_seconds(self) -> float:
        return sum(
            cpu - self.cpu_at_start.get(key, 0.0) for key, cpu in self.cpu_by_process.items()
        )


def sample_tree(pid: int) -> list[Sample]:
    """The process ``pid`` and its descendants now; processes gone meanwhile are skipped."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    samples = []
    for process in processes:
        try:
            with process.oneshot():
                cpu = process.cpu_times()
                samples.append(
                    Sample(
                        process.pid,
                        process.create_time(),
                        cpu.user + cpu.system,
                        process.memory_info().rss,
                    )
                )
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
    return samples


def peak_rss(pid: int) -> int:
    """The kernel's high-water mark of ``pid``'s resident set (VmHWM), in bytes; 0 if gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def peak_process_rss(pid: int) -> int:
    """The largest high-water mark (VmHWM) among ``pid`` and its descendants, in bytes: an
    API started with several workers serves from children of the process started, whose
    own mark is a supervisor's (44 MiB at 1M events, beside two 1.6 GiB servers)."""
    try:
        pids = [pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        return 0
    return max(peak_rss(p) for p in pids)


class TreeSampler:
    """Samples a process tree in a background thread until stopped."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.pid = pid
        self.usage = TreeUsage()
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sampler-{pid}", daemon=True)
        self.root_peak_rss = 0

    def __enter__(self) -> TreeSampler:
        self.usage.add(sample_tree(self.pid))
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def sample_now(self) -> None:
        self.usage.add(sample_tree(self.pid))
        self.root_peak_rss = max(self.root_peak_rss, peak_rss(self.pid))

    def stop(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(10)
            self.sample_now()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample_now()
