"""The cyclic garbage collector for long-running processes that allocate per event or per
request (the worker, the API).

Both import a large stack (Feast, pyarrow, the API also torch and MLflow) that leaves
millions of objects alive for the life of the process. With Python's default thresholds
the collector ran every few hundred allocations, and each collection of the oldest
generation walked all of them: in the worker about a third of its time
(``bench/worker_throughput.py``); in the API a pause of about half a second within a
minute under load, every request in flight waiting behind it (the p99 of an open-loop
run). Freezing moves what exists once the process has started out of every later
collection, and a larger young threshold collects young cycles less often; reference
counting still frees everything else at once, so memory is not held longer.

Measured on the API with `gc.callbacks` timing each collection, `make demo`'s stack with
the trained four-model set, open-loop 100-800 requests/s (`bench/load_test.py`):
unchanged, one full collection of 507 ms within a minute at 100-400/s; frozen with a young
threshold of 50,000, no full collection in 1.5-2 minutes at 200-800/s and five young ones
of about 50 ms each (0.24 s in all). Frozen with Python's default young threshold (700),
the full collections came every few seconds (the frozen heap no longer counts as
long-lived, which is what spaces them out): 29 in 2 minutes, about 0.18 s each; with
10,000, young collections cost 2 s in 90 s. Hence one threshold for both processes.
"""

from __future__ import annotations

import gc

# Allocations between collections of the youngest generation (Python's default: 700).
GC_YOUNG_THRESHOLD = 50_000


def freeze_startup_heap(young_threshold: int = GC_YOUNG_THRESHOLD) -> None:
    """Exclude every object alive now from later collections; collect young cycles every
    ``young_threshold`` allocations (net of deallocations)."""
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, oldest)
