"""Independent CPU-bound calls spread over forked processes, one thread each.

The calls' inputs are inherited by the fork (a 1M-event training set is never pickled
through a pipe); only each call's result comes back. In each process torch and numpy's
BLAS run one thread, as a DataLoader's workers do: two processes on two cores with two
threads each had four busy threads, and the training's evaluations gain nothing from a
second thread (the static evaluation of one target at 1M events: 36.6 s wall and 51.9
CPU-s with two threads, 34.0 s and 33.4 CPU-s with one).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch
from threadpoolctl import threadpool_limits

# What a forked process runs: set before the processes fork, read by ``_run``.
_CALLS: Sequence[Callable[[], Any]] | None = None


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def forked_map(calls: Sequence[Callable[[], Any]], processes: int | None = None) -> list[Any]:
    """Each of ``calls``' results, in order, computed in up to ``processes`` (default: the
    usable CPUs) forked processes; in this process when one would do. A call that raises
    raises here; a process killed (out of memory) fails the map rather than hanging it."""
    global _CALLS
    processes = min(len(calls), usable_cpus() if processes is None else processes)
    if processes <= 1:
        return [call() for call in calls]
    _CALLS = calls
    try:
        with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork")) as pool:
            return list(pool.map(_run, range(len(calls))))
    finally:
        _CALLS = None


def _run(index: int) -> Any:
    calls = _CALLS
    assert calls is not None, "runs only in a process forked by forked_map"
    torch.set_num_threads(1)
    with threadpool_limits(1):
        return calls[index]()
