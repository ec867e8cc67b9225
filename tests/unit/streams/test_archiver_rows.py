"""A row the archive's columns cannot hold is dead-lettered, not a stop of the archive.

The contract's bounds keep such rows out (issue 19: a rank of 2^31 in an int32 column);
this covers a record written before them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streamrec.settings import Settings
from streams.archiver import Archiver, _Pending
from streams.events import Topics


class RecordingDeadLetters:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, **letter: Any) -> None:
        self.sent.append(letter)


def _click(offset: int, rank: int) -> dict[str, Any]:
    return {
        "event_id": f"e{offset}",
        "event_time": 1_700_000_000_000,
        "user_id": "u1",
        "request_id": "r1",
        "item_id": "i1",
        "rank": rank,
        "kafka_partition": 0,
        "kafka_offset": offset,
    }


def test_a_row_past_int32_is_dead_lettered_and_the_rest_written(tmp_path: Path) -> None:
    archiver = Archiver(Settings(data_dir=tmp_path, state_dir=tmp_path))
    letters = RecordingDeadLetters()
    archiver._dead_letters = letters  # type: ignore[assignment]
    clicks = Topics(archiver.settings.topic_prefix).clicks
    pending = _Pending(first_offset=0, last_offset=2, records=3)
    for offset, rank in [(0, 1), (1, 2**31), (2, 3)]:
        pending.rows.append(_click(offset, rank))
        pending.raws.append((offset, b"u1", f"raw{offset}".encode()))

    table = archiver._table(clicks, 0, pending)

    assert table["rank"].to_pylist() == [1, 3]
    [letter] = letters.sent
    assert (letter["offset"], letter["value"]) == (1, b"raw1")
    assert "archive columns cannot hold it" in letter["reason"]
    assert archiver.stats.skipped == {clicks: 1}
