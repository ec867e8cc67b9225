"""What a stalled worker is doing, logged on ``kill -USR1 <pid>``: an idle event loop,
which a thread sampler such as py-spy cannot see into."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import faust

from streams.faust_patches import consumer_thread_loop, describe_consumer

log = logging.getLogger(__name__)


def log_tasks(app: faust.App) -> None:
    """Log the consumer's state and each task's chain of awaits, innermost last.

    The tasks of the consumer thread's own event loop (where the Kafka client fetches)
    are logged too, each marked so.
    """
    for line in describe_consumer(app):
        log.warning("%s", line)
    thread_loop = consumer_thread_loop(app)
    tasks = [(task, "") for task in asyncio.all_tasks()]
    if thread_loop is not None and thread_loop is not asyncio.get_running_loop():
        tasks += [(task, "consumer thread ") for task in asyncio.all_tasks(thread_loop)]
    for task, marker in tasks:
        where: list[str] = []
        awaited: Any = task.get_coro()
        while awaited is not None and len(where) < 50:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
            if frame is not None:
                where.append(
                    f"  {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}"
                )
            else:
                where.append(f"  {awaited!r}")
            awaited = _awaited_by(awaited)
        log.warning("%stask %s\n%s", marker, task.get_name(), "\n".join(where))


def _awaited_by(awaiting: Any) -> Any:
    """What a coroutine, async generator or future-iterator waits on, if it can be told."""
    for name in ("cr_await", "ag_await"):
        if hasattr(awaiting, name):
            return getattr(awaiting, name)
    if isinstance(awaiting, asyncio.Future):
        return None  # its repr names it and the callbacks of whoever waits on it
    # An async generator's ``asend``, a coroutine's ``__await__`` wrapper and a future's
    # iterator expose what they wrap only to the collector.
    for referent in gc.get_referents(awaiting):
        if hasattr(referent, "cr_frame") or hasattr(referent, "ag_frame"):
            return referent
        if isinstance(referent, asyncio.Future):
            return referent
    return None
