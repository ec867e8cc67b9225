"""Replay control shared by several API processes on one port (``streamrec serve
--workers``): one replay for the whole service, controllable from any process.

The process that accepts a start owns the replay: it runs it with its own
:class:`api.replay_control.ReplayControl` while it holds a Redis lock (refreshed every
``TICK_SECONDS``), writes the replay's view to Redis on every tick and after every control,
and answers controls that other processes queue for it on a Redis list. A process that does
not own the running replay reads the status from Redis and forwards each control to the
owner, waiting for its answer (the view after the control, or the owner's refusal), so a
control behaves as with one process whichever process a request reaches. A start while
the lock is held is refused (409) naming the running replay, as with one process; a crashed
owner's lock expires after ``LOCK_SECONDS``. docs/design.md ("Replay as a service") says
why the replay stays in one process rather than moving its state to Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError, RedisError

from api.replay_control import (
    ENDED,
    STOP_SECONDS,
    BackwardSeek,
    LogRange,
    NoReplay,
    ReplayConflict,
    ReplayControl,
    ReplayRequest,
    ReplayView,
)
from replay.replayer import ReplayStatus

logger = logging.getLogger(__name__)

# The owner's heartbeat: how often it refreshes its lock and the status others read.
TICK_SECONDS = 0.25
# A crashed owner's replay is taken for ended (and a new one may start) after this.
LOCK_SECONDS = 10.0
# How long a forwarded control waits for the owner (a stop also waits for its flush).
CONTROL_SECONDS = 5.0
# Unanswered controls and answers nobody read are dropped after this.
KEY_SECONDS = 60


class ReplayUnreachable(RuntimeError):
    """The process running the replay did not answer a forwarded control in time, or the
    Redis the processes share did not answer."""


@contextlib.asynccontextmanager
async def _redis_answers() -> AsyncIterator[None]:
    try:
        yield
    except RedisError as exc:
        raise ReplayUnreachable(
            f"the replay's shared state in Redis did not answer: {exc}"
        ) from exc


# Refusals the owner sends back, by name: the forwarding process raises the same error.
_ERRORS: dict[str, type[Exception]] = {"no_replay": NoReplay, "backward_seek": BackwardSeek}
_ERROR_NAMES = {error: name for name, error in _ERRORS.items()}


def encode_view(view: ReplayView) -> str:
    return json.dumps(
        {
            "run_id": view.run_id,
            "request": asdict(view.request),
            "started_at": view.started_at,
            "status": asdict(view.status),
            "log": asdict(view.log),
            "error": view.error,
        }
    )


def decode_view(raw: str | bytes) -> ReplayView:
    data = json.loads(raw)
    return ReplayView(
        run_id=data["run_id"],
        request=ReplayRequest(**data["request"]),
        started_at=data["started_at"],
        status=ReplayStatus(**data["status"]),
        log=LogRange(**data["log"]),
        error=data["error"],
    )


class SharedReplayControl:
    """The async face of the routes over a local :class:`ReplayControl`, shared through
    Redis with the service's other processes (see the module docstring)."""

    def __init__(self, local: ReplayControl, redis_url: str, prefix: str) -> None:
        self._local = local
        self._redis = Redis.from_url(redis_url, socket_connect_timeout=2.0)
        self._owner_key = f"{prefix}replay:owner"
        self._view_key = f"{prefix}replay:view"
        self._prefix = prefix
        self._lock: Lock | None = None  # held while this process owns the running replay
        self._owner_task: asyncio.Task[None] | None = None

    def _owns(self) -> bool:
        view = self._local.view()
        return self._lock is not None and view is not None and view.status.state not in ENDED

    def _commands_key(self, owner: str) -> str:
        return f"{self._prefix}replay:commands:{owner}"

    async def start(self, request: ReplayRequest) -> ReplayView:
        async with _redis_answers():
            return await self._start(request)

    async def _start(self, request: ReplayRequest) -> ReplayView:
        lock = self._redis.lock(self._owner_key, timeout=LOCK_SECONDS, blocking=False)
        if not await lock.acquire(token=uuid.uuid4().hex):
            running = await self._shared_view()
            named = (
                f"replay {running.run_id} of {running.request.source!r} is {running.status.state}"
                if running is not None
                else "a replay is starting"
            )
            raise ReplayConflict(f"{named} (in another API process); stop it first")
        try:
            view = await self._local.start(request)
        except BaseException:
            await _release(lock)
            raise
        self._lock = lock
        await self._redis.set(self._view_key, encode_view(view))
        self._owner_task = asyncio.create_task(self._serve(lock), name="replay-owner")
        return view

    async def view(self) -> ReplayView | None:
        if self._owns():
            return self._local.view()
        async with _redis_answers():
            return await self._shared_view()

    async def _shared_view(self) -> ReplayView | None:
        raw = await self._redis.get(self._view_key)
        return decode_view(raw) if raw is not None else None

    async def pause(self) -> ReplayView:
        return await self._control("pause")

    async def resume(self) -> ReplayView:
        return await self._control("resume")

    async def set_speed(self, speed: float | None) -> ReplayView:
        return await self._control("set_speed", speed)

    async def seek(self, t_ms: int) -> ReplayView:
        return await self._control("seek", t_ms)

    async def stop(self) -> ReplayView:
        return await self._control("stop")

    async def _control(self, action: str, *args: Any) -> ReplayView:
        if self._owns():
            view = await self._apply(action, args)
            # Others read it; the control itself is done, so a Redis failure only logs.
            try:
                await self._redis.set(self._view_key, encode_view(view))
            except RedisError as exc:
                logger.warning("replay status not shared after %s: %s", action, exc)
            return view
        async with _redis_answers():
            return await self._forward(action, args)

    async def _apply(self, action: str, args: Any) -> ReplayView:
        if action == "stop":
            return await self._local.stop()
        view: ReplayView = getattr(self._local, action)(*args)
        return view

    async def _forward(self, action: str, args: Any) -> ReplayView:
        owner = await self._redis.get(self._owner_key)
        if owner is None:
            raise NoReplay("no replay is running; start one with POST /admin/replay")
        command_id = uuid.uuid4().hex
        reply_key = f"{self._prefix}replay:reply:{command_id}"
        commands = self._commands_key(owner.decode())
        command = json.dumps({"id": command_id, "action": action, "args": list(args)})
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.rpush(commands, command)
            pipe.expire(commands, KEY_SECONDS)
            await pipe.execute()
        wait = CONTROL_SECONDS + (STOP_SECONDS if action == "stop" else 0.0)
        # redis-py types sync and async alike
        answer = await self._redis.blpop([reply_key], timeout=wait)  # type: ignore[misc]
        if answer is None:
            if await self._redis.get(self._owner_key) is None:
                raise NoReplay("no replay is running; start one with POST /admin/replay")
            raise ReplayUnreachable(
                f"the API process running the replay did not answer {action} within {wait:.0f}s"
            )
        reply = json.loads(answer[1])
        if "error" in reply:
            raise _ERRORS[reply["error"]](reply["message"])
        return decode_view(reply["view"])

    async def _serve(self, lock: Lock) -> None:
        """The owner's loop: controls from other processes, status, lock, until the
        replay ends; then the lock is released and late controls are refused."""
        commands = self._commands_key(_token(lock))
        try:
            while True:
                view = self._local.view()
                if view is None or view.status.state in ENDED:
                    break
                item = await self._redis.blpop([commands], timeout=TICK_SECONDS)  # type: ignore[misc]
                if item is not None:
                    await self._answer(lock, json.loads(item[1]))
                view = self._local.view()
                if view is not None:
                    await self._redis.set(self._view_key, encode_view(view))
                await lock.reacquire()
        except (RedisError, LockError) as exc:
            logger.error("replay owner lost Redis; other API processes cannot control it: %s", exc)
        finally:
            self._lock = None
            with contextlib.suppress(RedisError):
                view = self._local.view()
                if view is not None:
                    await self._redis.set(self._view_key, encode_view(view))
                await _release(lock)
                while (late := await self._redis.lpop(commands)) is not None:  # type: ignore[misc]
                    await self._reply(
                        json.loads(late)["id"], _refusal(NoReplay("no replay is running"))
                    )

    async def _answer(self, lock: Lock, command: dict[str, Any]) -> None:
        action = command["action"]
        if action == "stop":
            # The flush may take longer than the lock lives.
            await lock.extend(STOP_SECONDS)
        try:
            view = await self._apply(action, command["args"])
        except (NoReplay, BackwardSeek) as exc:
            await self._reply(command["id"], _refusal(exc))
            return
        await self._redis.set(self._view_key, encode_view(view))
        await self._reply(command["id"], {"view": encode_view(view)})

    async def _reply(self, command_id: str, reply: dict[str, str]) -> None:
        key = f"{self._prefix}replay:reply:{command_id}"
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.rpush(key, json.dumps(reply))
            pipe.expire(key, KEY_SECONDS)
            await pipe.execute()

    async def close(self) -> None:
        """Shutdown: a replay this process runs is stopped (and flushed) first."""
        await self._local.close()
        if self._owner_task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._owner_task, TICK_SECONDS * 8)
        await self._redis.aclose()


def _token(lock: Lock) -> str:
    token = lock.local.token
    return token.decode() if isinstance(token, bytes) else str(token)


def _refusal(error: Exception) -> dict[str, str]:
    return {"error": _ERROR_NAMES[type(error)], "message": str(error)}


async def _release(lock: Lock) -> None:
    with contextlib.suppress(LockError):
        await lock.release()
