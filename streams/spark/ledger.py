"""Which micro-batches of a query reached the online store, so each counts once.

``foreachBatch`` is at-least-once: after a crash between our push and Spark's commit,
Spark runs the same ``batchId`` again from its checkpoint. The ledger, a small JSON file in
the query's checkpoint folder, remembers the last batch written; a batch at or below it is
skipped. It also keeps the query's event-time clock and the last Feast row time, which
must move forward per entity (the Redis store drops a row not newer than the stored one).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

LEDGER_FILE = "streamrec-ledger.json"


@dataclass
class LedgerState:
    last_batch_id: int = -1
    clock_ms: int | None = None  # newest event time folded so far
    last_stamp_ms: int = 0  # event_timestamp of the last rows pushed
    batches: int = 0  # batches written
    rows: int = 0  # rows pushed, over all batches
    skipped: int = 0  # batches seen again after a restart and not written twice
    malformed: int = 0  # invalid records dropped (the query that observes parsing)
    last_counted_batch_id: int = -1  # newest batch whose parse metrics are in `malformed`


class BatchLedger:
    """The ledger file of one query. foreachBatch commits while the job's loop counts
    malformed records from the progress reports, so writes hold a lock."""

    def __init__(self, checkpoint: Path) -> None:
        self.path = checkpoint / LEDGER_FILE
        self.state = self._load()
        self._lock = threading.Lock()

    def _load(self) -> LedgerState:
        if not self.path.exists():
            return LedgerState()
        try:
            return LedgerState(**json.loads(self.path.read_text()))
        except (json.JSONDecodeError, TypeError) as exc:
            raise RuntimeError(f"unreadable Spark batch ledger {self.path}: {exc}") from exc

    def written(self, batch_id: int) -> bool:
        return batch_id <= self.state.last_batch_id

    def next_stamp(self, window_end_ms: int) -> int:
        """Feast row time of the next push: the window end, moved past the last push."""
        return max(window_end_ms, self.state.last_stamp_ms + 1)

    def commit(self, batch_id: int, clock_ms: int | None, stamp_ms: int | None, rows: int) -> None:
        with self._lock:
            state = self.state
            state.last_batch_id = batch_id
            state.clock_ms = clock_ms
            if stamp_ms is not None:
                state.last_stamp_ms = stamp_ms
            state.batches += 1
            state.rows += rows
            self._save()

    def skip(self) -> None:
        with self._lock:
            self.state.skipped += 1
            self._save()

    def count_malformed(self, batch_id: int, malformed: int) -> bool:
        """Add one batch's invalid records once; False when that batch was counted before."""
        with self._lock:
            if batch_id <= self.state.last_counted_batch_id:
                return False
            self.state.malformed += malformed
            self.state.last_counted_batch_id = batch_id
            self._save()
            return True

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self.state)))
        os.replace(tmp, self.path)
