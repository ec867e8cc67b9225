"""The worker's join (``FaustJoin``) over an in-memory table: the same entries and the
same forgotten requests as ``RequestJoin``, batch by batch, across a restart and a
rebalance (the real table and broker: ``tests/integration``)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from faust.types import EventT, StreamT, TableT
from prometheus_client import CollectorRegistry

from streams.events import Click, RecommendationServed, RecommendedItem
from streams.joins import (
    ATTRIBUTION_WINDOW_MS,
    GRACE_MS,
    FaustJoin,
    JoinMetrics,
    RequestJoin,
    RequestState,
)

T0 = 1_700_000_000_000
RECS, CLICKS = "t.recommendations", "t.clicks"


@dataclass(frozen=True)
class _Message:
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class _Event:
    message: _Message


class _Stream:
    """What the join asks of a Faust stream: the event whose changelog partition a write
    goes to."""

    def __init__(self) -> None:
        self.current_event: Any = None
        self.written_under: list[Any] = []

    def _set_current_event(self, event: Any) -> None:
        self.current_event = event


class _Table(dict[str, bytes]):
    """A dict that records under which current event each key was written or deleted."""

    def __init__(self, stream: _Stream) -> None:
        super().__init__()
        self.stream = stream
        self.partitions: dict[str, int] = {}

    def __setitem__(self, key: str, value: bytes) -> None:
        self.partitions[key] = self.stream.current_event.message.partition
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.partitions[key] = self.stream.current_event.message.partition
        super().__delitem__(key)


def _log(seed: int, count: int) -> list[tuple[str, int, RecommendationServed | Click]]:
    """(topic, partition, event) in read order: requests over three partitions, clicks
    on them (some before their impression), event time moving about 4 h in all."""
    rng = random.Random(seed)
    log: list[tuple[str, int, RecommendationServed | Click]] = []
    for n in range(count):
        at = T0 + n * 30_000 + rng.randrange(-60_000, 60_000)
        request = f"r{rng.randrange(count // 2)}"
        partition = int(request[1:]) % 3
        if rng.random() < 0.5:
            items = tuple(
                RecommendedItem(item_id=f"i{(n + k) % 9}", rank=k + 1, score=1.0, reason="")
                for k in range(3)
            )
            served = RecommendationServed(
                user_id="u",
                request_id=request,
                variant="a",
                model_version="m",
                event_time=at,
                items=items,
            )
            log.append((RECS, partition, served))
        else:
            click = Click(
                user_id="u", request_id=request, item_id=f"i{n % 9}", rank=1, event_time=at
            )
            log.append((CLICKS, partition, click))
    return log


def _positioned(
    log: list[tuple[str, int, RecommendationServed | Click]],
) -> list[tuple[_Event, RecommendationServed | Click]]:
    offsets: dict[tuple[str, int], int] = {}
    out = []
    for topic, partition, event in log:
        offset = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = offset + 1
        out.append((_Event(_Message(topic, partition, offset)), event))
    return out


def _faust_join(table: _Table) -> tuple[FaustJoin, JoinMetrics]:
    metrics = JoinMetrics.create(CollectorRegistry())
    return FaustJoin(cast(TableT, table), metrics), metrics


def _counting(metrics: JoinMetrics) -> Callable[[str], float]:
    """What the join gave up since now, by reason. Once Feast is imported (other tests do),
    prometheus_client counts in per-process files, so a new registry starts where the
    last one of the same name stopped."""
    start = {why: metrics.given_up.labels(why)._value.get() for why in _WHYS}
    return lambda why: metrics.given_up.labels(why)._value.get() - start[why]


_WHYS = ("pending_click", "request")


def _fold(
    join: FaustJoin, stream: _Stream, batch: list[tuple[_Event, RecommendationServed | Click]]
) -> list[Any]:
    events = cast(list[tuple[EventT, RecommendationServed | Click]], batch)
    return join.fold_batch(cast(StreamT, stream), events)


def test_batches_over_the_table_send_and_forget_what_the_plain_join_does() -> None:
    positioned = _positioned(_log(seed=5, count=900))
    plain = RequestJoin()
    stream = _Stream()
    table = _Table(stream)
    join, metrics = _faust_join(table)
    given_up = _counting(metrics)
    for start in range(0, len(positioned), 40):
        batch = positioned[start : start + 40]
        want = []
        for event, decoded in batch:
            message = event.message
            source = f"{message.topic}:{message.partition}"
            want += plain.fold(decoded, source, message.partition, message.offset)
        plain.expire()
        assert _fold(join, stream, batch) == want
        assert set(table) == set(plain.requests)
        assert {k: RequestState.from_json(v) for k, v in table.items()} == plain.requests
        # Each key is written and deleted under an event of its own partition.
        assert all(table.partitions[k] == int(k[1:]) % 3 for k in table.partitions)
        assert metrics.held._value.get() == len(plain.requests)
    for why in ("pending_click", "request"):
        assert given_up(why) == plain.given_up[why] > 0
    assert stream.current_event is None  # the arriving event is current again


def test_a_restarted_join_indexes_the_stored_requests_and_forgets_them_when_due() -> None:
    positioned = _positioned(_log(seed=8, count=300))
    stream = _Stream()
    table = _Table(stream)
    first, _ = _faust_join(table)
    _fold(first, stream, positioned)
    held = set(table)
    served = {k for k in held if RequestState.from_json(table[k]).served_time is not None}
    assert served and held - served
    # A new worker over the recovered table: its clocks start low, nothing is forgotten
    # until the clocks pass the stored requests' bounds again.
    restarted, metrics = _faust_join(table)
    given_up = _counting(metrics)
    last = max(event.event_time for _, event in positioned)
    late_click = Click(user_id="u", request_id="new", item_id="x", rank=1, event_time=last + 60_000)
    _fold(restarted, stream, [(_Event(_Message(CLICKS, 0, 10_000)), late_click)])
    far = last + ATTRIBUTION_WINDOW_MS + GRACE_MS + 120_000
    for partition in range(3):
        click = Click(
            user_id="u", request_id=f"far{partition}", item_id="x", rank=1, event_time=far
        )
        _fold(restarted, stream, [(_Event(_Message(CLICKS, partition, 10_001)), click)])
    # The served requests are forgotten; the pending clicks wait for the served clock.
    assert set(table) == held - served | {"new", "far0", "far1", "far2"}
    assert given_up("request") == len(served)


def test_after_a_rebalance_the_table_is_walked_again() -> None:
    stream = _Stream()
    table = _Table(stream)
    join, metrics = _faust_join(table)
    given_up = _counting(metrics)
    first = RecommendationServed(
        user_id="u", request_id="a", variant="v", model_version="m", event_time=T0, items=()
    )
    _fold(join, stream, [(_Event(_Message(RECS, 1, 0)), first)])
    # A request recovered into the table by an assignment, never folded by this worker.
    dict.__setitem__(table, "b", RequestState(partition=1, served_time=T0).to_json())
    far = T0 + ATTRIBUTION_WINDOW_MS + GRACE_MS + 1
    clicks = [
        Click(user_id="u", request_id=f"c{n}", item_id="x", rank=1, event_time=far)
        for n in range(2)
    ]
    _fold(join, stream, [(_Event(_Message(CLICKS, 1, 0)), clicks[0])])
    assert set(table) == {"b", "c0"}  # the index has not seen "b"
    join.rebalanced()
    _fold(join, stream, [(_Event(_Message(CLICKS, 1, 1)), clicks[1])])
    assert set(table) == {"c0", "c1"} and given_up("request") == 2


def _served_at(request_id: str, at: int) -> RecommendationServed:
    return RecommendationServed(
        user_id="u", request_id=request_id, variant="v", model_version="m", event_time=at, items=()
    )


def test_a_partition_with_every_click_folded_forgets_by_the_served_clock_taken_first() -> None:
    stream = _Stream()
    table = _Table(stream)
    join, metrics = _faust_join(table)
    given_up = _counting(metrics)
    past = T0 + ATTRIBUTION_WINDOW_MS + GRACE_MS + 1
    _fold(join, stream, [(_Event(_Message(RECS, 0, 0)), _served_at("old", T0))])
    _fold(join, stream, [(_Event(_Message(RECS, 0, 1)), _served_at("new", past))])
    before = join.served_clocks()
    assert before == {0: past}
    _fold(join, stream, [(_Event(_Message(RECS, 0, 2)), _served_at("newer", past + 10**9))])
    # Clicks logged but not all folded: the clock stays.
    assert join.clicks_caught_up(before, logged={0: 4}, folded={0: 3}) == []
    _fold(join, stream, [(_Event(_Message(RECS, 0, 3)), _served_at("next", past))])
    assert "old" in table
    # Every click folded (committed, or folded here): moved to the clock taken first.
    click = Click(user_id="u", request_id="c", item_id="x", rank=1, event_time=T0)
    _fold(join, stream, [(_Event(_Message(CLICKS, 0, 3)), click)])
    assert join.clicks_caught_up(before, logged={0: 4}, folded={0: 1}) == [0]
    _fold(join, stream, [(_Event(_Message(RECS, 0, 4)), _served_at("last", past))])
    assert set(table) == {"new", "newer", "next", "last"}  # "c" waited too long
    assert given_up("request") == 1
    # A clock already passed does not move back.
    assert join.clicks_caught_up({0: T0}, logged={0: 4}, folded={0: 4}) == []
