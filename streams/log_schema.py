"""The columns of the canonical interaction log, as Parquet: one declaration for the
prepared dataset logs (``replay``) and the archive of the interactions topic (``archiver``).
"""

from __future__ import annotations

import pyarrow as pa

EVENT_LOG_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("event_time", pa.int64(), nullable=False),  # epoch ms, UTC
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("rating", pa.float64()),
    ]
)
