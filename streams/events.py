"""The event contract, version 1: frozen typed events and the one encode/decode pair.

Every producer and consumer goes through :func:`encode` and :func:`decode`. Records are
JSON objects keyed by ``user_id`` so one user's events stay in order on one partition.
A record that cannot be decoded raises :class:`EventRejected` with a reason; consumers
send it to the dead-letter topic with :func:`dead_letter` instead of stopping.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, TypeVar, get_args

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    model_serializer,
)

SCHEMA_VERSION = 1
# A record larger than this is refused rather than folded: no legitimate event is near it.
MAX_RECORD_BYTES = 64 * 1024

# The bounds of every field, chosen so that every consumer can store what the contract
# accepts: the archiver's Parquet columns (rank int32, event_time int64, rating float64),
# the Spark job's StructType and the Feast rows. A record inside them never stops a consumer.
ID_MAX_CHARS = 256
# C0 and C1 control characters and the Unicode line separators: an id holding one could
# forge a log line or split a CSV export. The same rule is the Spark job's (``rlike``).
ID_PATTERN = r"^[^\x00-\x1F\x7F-\x9F\u2028\u2029]+$"
TEXT_MAX_CHARS = 1024  # variant, model version, reason: short labels
RANK_MAX = 2**31 - 1  # int32 in the archive
RATING_MIN, RATING_MAX = 0.0, 10.0
EVENT_TIME_MIN_MS = 631_152_000_000  # 1990-01-01: earlier is a seconds-vs-ms mistake
EVENT_TIME_MAX_MS = 4_102_444_800_000  # 2100-01-01
ITEMS_MAX = 1000  # items in one served list (the API serves at most 100)

Action = Literal["view", "click", "rate", "cart", "purchase"]
ACTIONS: tuple[str, ...] = ("view", "click", "rate", "cart", "purchase")
Source = Literal["replay", "live"]


def normalise_id(value: object) -> object:
    """The one rule for ids, in bodies, query parameters and records alike: an integer
    becomes its decimal string (shops with numeric ids), surrounding whitespace goes, and
    text that cannot be written as UTF-8 (a lone surrogate) is refused."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError("not valid Unicode text (it holds a lone surrogate)") from exc
        return value.strip()
    return value


def _epoch_ms_in_range(value: object) -> object:
    """Refuse an out-of-range time with the unit in the message (the usual mistake is
    seconds)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return value
    if not EVENT_TIME_MIN_MS <= value <= EVENT_TIME_MAX_MS:
        hint = (
            "; that looks like epoch seconds: multiply by 1000"
            if EVENT_TIME_MIN_MS // 1000 <= value <= EVENT_TIME_MAX_MS // 1000
            else ""
        )
        raise ValueError(
            f"event_time is epoch milliseconds (UTC) from {EVENT_TIME_MIN_MS} (1990-01-01) "
            f"to {EVENT_TIME_MAX_MS} (2100-01-01), got {value}{hint}"
        )
    return value


Id = Annotated[
    str,
    BeforeValidator(normalise_id),
    StringConstraints(min_length=1, max_length=ID_MAX_CHARS, pattern=ID_PATTERN),
    # What a client may send: the string rule, or an integer (sent on as its decimal text).
    WithJsonSchema(
        {
            "anyOf": [
                {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": ID_MAX_CHARS,
                    "pattern": ID_PATTERN,
                    "description": "surrounding whitespace is removed before the checks",
                },
                {"type": "integer"},
            ]
        }
    ),
]
Text = Annotated[str, StringConstraints(max_length=TEXT_MAX_CHARS)]
EventTimeMs = Annotated[
    int,
    Field(ge=EVENT_TIME_MIN_MS, le=EVENT_TIME_MAX_MS, description="epoch milliseconds, UTC"),
    BeforeValidator(_epoch_ms_in_range),
]
Rating = Annotated[float, Field(ge=RATING_MIN, le=RATING_MAX, allow_inf_nan=False)]
Rank = Annotated[int, Field(ge=1, le=RANK_MAX, description="1-based position in the list")]
Score = Annotated[float, Field(allow_inf_nan=False)]


def new_event_id() -> str:
    return uuid.uuid4().hex


def now_ms() -> int:
    return int(time.time() * 1000)


class LogEvent(BaseModel):
    """Fields every record of the log carries. Subclasses name their topic in ``topic``
    and their partition key in ``key``."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    topic: ClassVar[str]

    event_id: Id = Field(default_factory=new_event_id)
    schema_version: Literal[1] = Field(1, alias="schema")  # SCHEMA_VERSION
    event_time: EventTimeMs = Field(default_factory=now_ms)

    @property
    def key(self) -> str:
        raise NotImplementedError


class Event(LogEvent):
    """An event about one user: ``user_id`` is the partition key that keeps one user's
    events in order. Every event the users' traffic makes is one."""

    user_id: Id

    @property
    def key(self) -> str:
        """Partition key: the user, so one user's events stay ordered."""
        return self.user_id


class Interaction(Event):
    topic: ClassVar[str] = "interactions"

    item_id: Id
    action: Action
    rating: Rating | None = None
    source: Source = "live"


def _drop_none(data: Any, fields: tuple[str, ...]) -> Any:
    """A record outside any experiment stays what it was before experiments existed."""
    if isinstance(data, dict):
        for name in fields:
            if data.get(name, 0) is None:
                del data[name]
    return data


class RecommendedItem(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    item_id: Id
    rank: Rank
    score: Score
    reason: Text
    # Experiments (optional, absent outside one): the variant that placed the item (the
    # team, in an interleaved list), and the item's propensity when the list explored.
    variant: str | None = Field(None, max_length=TEXT_MAX_CHARS)
    propensity: float | None = Field(None, gt=0.0, le=1.0, allow_inf_nan=False)
    # DIN's logit of the item when the trained cascade ranked it (absent otherwise): the
    # monitor compares its distribution with the serving set's reference.
    din_score: Score | None = None

    @model_serializer(mode="wrap")
    def _without_unset_experiment(self, handler: SerializerFunctionWrapHandler) -> Any:
        return _drop_none(handler(self), ("variant", "propensity", "din_score"))


class RecommendationServed(Event):
    topic: ClassVar[str] = "recommendations"

    request_id: Id
    variant: Text
    model_version: Text
    # the experiment that chose ``variant``; None outside one
    experiment: str | None = Field(None, max_length=TEXT_MAX_CHARS)

    @model_serializer(mode="wrap")
    def _without_unset_experiment(self, handler: SerializerFunctionWrapHandler) -> Any:
        return _drop_none(handler(self), ("experiment",))

    items: tuple[RecommendedItem, ...] = Field(max_length=ITEMS_MAX)


class Click(Event):
    topic: ClassVar[str] = "clicks"

    request_id: Id
    item_id: Id
    rank: Rank


EVENT_TYPES: dict[str, type[Event]] = {
    cls.topic: cls for cls in (Interaction, RecommendationServed, Click)
}

MonitorSignal = Literal["drift", "degradation"]
MonitorDecisionKind = Literal[
    "triggered",
    "retrain_finished",
    "retrain_failed",
    "canary_started",
    "canary_promoted",
    "canary_rolled_back",
]
MONITOR_DECISIONS: tuple[str, ...] = get_args(MonitorDecisionKind)


class MonitorDecision(LogEvent):
    """What the monitor decided about the serving set: a signal that persisted past its
    threshold triggered a retrain, what the registry gate made of the result, and the canary
    of a set that became ``challenger`` (started, then promoted or rolled back). Not about
    a user: one key, so the decisions stay in order; the archiver does not read it."""

    topic: ClassVar[str] = "monitor"

    decision: MonitorDecisionKind
    signal: MonitorSignal
    model_set: Text  # the set the monitor compared traffic with; "" when none
    detail: Text  # the scores behind the signal, or the gate's reason, in one sentence
    events_seen: int = Field(ge=0, description="live interactions the monitor had read")
    new_set: Text | None = None  # retrain_finished, canary_*: the set it registered
    promoted: bool | None = None  # retrain_finished, canary_*: whether it became champion

    @property
    def key(self) -> str:
        return self.topic


DEAD_LETTERS = "dead-letters"


@dataclass(frozen=True)
class Topics:
    """Topic names under one prefix, so tests and tenants never share a topic."""

    prefix: str = "streamrec."

    @property
    def interactions(self) -> str:
        return self.prefix + Interaction.topic

    @property
    def recommendations(self) -> str:
        return self.prefix + RecommendationServed.topic

    @property
    def clicks(self) -> str:
        return self.prefix + Click.topic

    @property
    def dead_letters(self) -> str:
        return self.prefix + DEAD_LETTERS

    @property
    def monitor(self) -> str:
        return self.prefix + MonitorDecision.topic

    def all(self) -> list[str]:
        return [
            self.interactions,
            self.recommendations,
            self.clicks,
            self.dead_letters,
            self.monitor,
        ]

    def event_type(self, topic: str) -> type[Event]:
        """The event class a topic carries; KeyError for a topic outside the contract."""
        if not topic.startswith(self.prefix):
            raise KeyError(topic)
        return EVENT_TYPES[topic[len(self.prefix) :]]


E = TypeVar("E", bound=LogEvent)


class EventRejected(ValueError):
    """A record that is not a valid event of its topic; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Upcasters turn a version-N payload into version N+1, one step at a time. Version 1 is
# the first, so none exist yet; a version-2 schema adds `1: upcast_v1_to_v2` here.
UPCASTERS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def encode(event: LogEvent) -> tuple[bytes, bytes]:
    """(key, value) bytes of one Kafka record."""
    value = event.model_dump_json(by_alias=True).encode()
    return event.key.encode(), value


def decode(event_type: type[E], value: bytes | str | None) -> E:
    """Parse and validate one record as ``event_type``; raise EventRejected with a reason."""
    if value is None:
        raise EventRejected("empty record (null value)")
    raw = value.encode() if isinstance(value, str) else value
    if len(raw) > MAX_RECORD_BYTES:
        raise EventRejected(f"record of {len(raw)} bytes exceeds the {MAX_RECORD_BYTES} limit")
    try:
        # orjson: a fifth of the stdlib parser's time on an event, the same objects back.
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:  # also raised for bytes that are not UTF-8
        raise EventRejected(f"not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise EventRejected(f"not a JSON object but {type(payload).__name__}")
    version = payload.get("schema")
    if not isinstance(version, int) or isinstance(version, bool):
        raise EventRejected(f"missing or non-integer schema version: {version!r}")
    if version > SCHEMA_VERSION or version < 1:
        raise EventRejected(
            f"unsupported schema version {version} (this build reads 1..{SCHEMA_VERSION})"
        )
    while version < SCHEMA_VERSION:
        payload = UPCASTERS[version](payload)
        version += 1
        payload["schema"] = version
    try:
        return event_type.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise EventRejected(f"invalid {event_type.__name__}: {problems}") from exc


def dead_letter(
    *,
    topic: str,
    partition: int | None,
    offset: int | None,
    key: bytes | None,
    value: bytes | None,
    reason: str,
    consumer: str | None = None,
) -> tuple[bytes | None, bytes]:
    """(key, value) of a dead-letter record: the raw record, where it came from, and why.

    ``consumer`` names who could not process it (worker, archiver, backfill, spark): each
    consumer reports what it refused, so one hostile record may be dead-lettered by several.
    The raw value is kept as base64 so that bytes that are not UTF-8 survive unchanged.
    """
    body = {
        "reason": reason,
        "consumer": consumer,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "key": key.decode("utf-8", "replace") if key is not None else None,
        "value_b64": base64.b64encode(value).decode() if value is not None else None,
        "rejected_at": now_ms(),
    }
    return key, json.dumps(body).encode()
