"""Replay control, behind the API key: start, status, pause, resume, speed, seek, stop.

One replay at a time; a second start is ``409`` naming the running one. Controls with no
replay running are ``409`` too (there is nothing to control). Times are epoch seconds or
ISO 8601, as everywhere in the CLI; positions are reported in epoch milliseconds of the
log's own event time (before any ``rebase_now`` shift).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.replay_control import (
    BackwardSeek,
    NoReplay,
    ReplayConflict,
    ReplayControls,
    ReplayRequest,
    ReplayView,
    UnknownSource,
)
from api.replay_shared import ReplayUnreachable
from api.security import AdminKey
from replay.replayer import IDLE, ReplayError
from streamrec.times import format_ms, parse_time_ms

router = APIRouter(prefix="/admin/replay", tags=["admin"], dependencies=[AdminKey])

# "max": as fast as the broker takes them; otherwise a multiple of real time.
Speed = Annotated[float, Field(gt=0, le=1e9)] | Literal["max"]


def get_replay_control(request: Request) -> ReplayControls:
    return request.app.state.replay_controls


ReplayControlDep = Annotated[ReplayControls, Depends(get_replay_control)]


def _time_ms(value: float | str | None) -> int | None:
    if value is None:
        return None
    return parse_time_ms(str(value))


class ReplayStart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    speed: Speed = 1.0
    since: float | str | None = None  # epoch seconds or ISO 8601
    until: float | str | None = None
    # Shift event times so the first event sent is "now" (new event ids: new facts).
    rebase_now: bool = False

    @field_validator("since", "until")
    @classmethod
    def _parses(cls, value: float | str | None) -> float | str | None:
        _time_ms(value)  # raises ValueError with the input named: a 422
        return value


class SpeedIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    speed: Speed


class SeekIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: float | str  # epoch seconds or ISO 8601, in the log's event time

    @field_validator("to")
    @classmethod
    def _parses(cls, value: float | str) -> float | str:
        _time_ms(value)
        return value


class LogRangeOut(BaseModel):
    source: str
    first_ms: int
    last_ms: int
    events: int


class ReplayOut(BaseModel):
    state: str  # idle (never started), running, paused, finished, stopped or failed
    run_id: str | None = None
    source: str | None = None
    speed: float | Literal["max"] | None = None
    position_ms: int | None = None  # event time of the last event sent
    position: str | None = None  # the same, ISO 8601
    events_sent: int = 0
    delivery_failures: int = 0
    rate: float = 0.0  # events per second of running time
    lag_ms: float | None = None  # how far the last event sent trails the paced event time
    since_ms: int | None = None
    until_ms: int | None = None
    rebase_now: bool = False
    started_at: float | None = None
    log: LogRangeOut | None = None
    error: str | None = None

    @classmethod
    def from_view(cls, view: ReplayView | None) -> ReplayOut:
        if view is None:
            return cls(state=IDLE)
        s, r = view.status, view.request
        return cls(
            state=s.state,
            run_id=view.run_id,
            source=r.source,
            speed="max" if s.speed is None else s.speed,
            position_ms=s.position_ms,
            position=format_ms(s.position_ms) if s.position_ms is not None else None,
            events_sent=s.events_sent,
            delivery_failures=s.delivery_failures,
            rate=round(s.rate, 1),
            lag_ms=view.lag_ms,
            since_ms=r.since_ms,
            until_ms=r.until_ms,
            rebase_now=r.rebase_now,
            started_at=view.started_at,
            log=LogRangeOut(
                source=view.log.source,
                first_ms=view.log.first_ms,
                last_ms=view.log.last_ms,
                events=view.log.events,
            ),
            error=view.error,
        )


def _speed(value: float | str) -> float | None:
    return None if value == "max" else float(value)


@router.post("", response_model=ReplayOut, status_code=status.HTTP_202_ACCEPTED)
async def start_replay(body: ReplayStart, control: ReplayControlDep) -> ReplayOut:
    request = ReplayRequest(
        source=body.source,
        speed=_speed(body.speed),
        since_ms=_time_ms(body.since),
        until_ms=_time_ms(body.until),
        rebase_now=body.rebase_now,
    )
    try:
        view = await control.start(request)
    except ReplayConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    except UnknownSource as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except ReplayError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc)) from exc
    except ReplayUnreachable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    return ReplayOut.from_view(view)


@router.get("", response_model=ReplayOut)
async def replay_status(control: ReplayControlDep) -> ReplayOut:
    try:
        view = await control.view()
    except ReplayUnreachable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    return ReplayOut.from_view(view)


async def _control(action: Awaitable[ReplayView]) -> ReplayOut:
    try:
        view = await action
    except NoReplay as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    except BackwardSeek as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    except ReplayUnreachable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    return ReplayOut.from_view(view)


@router.post("/pause", response_model=ReplayOut)
async def pause_replay(control: ReplayControlDep) -> ReplayOut:
    return await _control(control.pause())


@router.post("/resume", response_model=ReplayOut)
async def resume_replay(control: ReplayControlDep) -> ReplayOut:
    return await _control(control.resume())


@router.post("/speed", response_model=ReplayOut)
async def set_replay_speed(body: SpeedIn, control: ReplayControlDep) -> ReplayOut:
    return await _control(control.set_speed(_speed(body.speed)))


@router.post("/seek", response_model=ReplayOut)
async def seek_replay(body: SeekIn, control: ReplayControlDep) -> ReplayOut:
    return await _control(control.seek(parse_time_ms(str(body.to))))


@router.post("/stop", response_model=ReplayOut)
async def stop_replay(control: ReplayControlDep) -> ReplayOut:
    return await _control(control.stop())
