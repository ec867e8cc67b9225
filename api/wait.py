"""Wait until a running API serves a trained champion set: ``python -m api.wait``.

Used by ``make demo`` and ``make api-check`` after starting ``streamrec serve``: the API
answers at once (with the baseline item-kNN) and loads the champion in the background, so "up"
is not "serving the trained cascade". Polls ``/readyz`` until every check passes and the
models check names a set; prints that set's label.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import httpx

from api.metrics import PROCESS_HEADER

NO_CHAMPION = "no champion"


def serving_label(url: str) -> tuple[str | None, str]:
    """(the champion label when ready and serving one, else None; what was seen)."""
    label, seen, _ = _serving(url)
    return label, seen


def _serving(url: str) -> tuple[str | None, str, str | None]:
    """serving_label and the process that answered (``x-streamrec-pid``)."""
    try:
        # A fresh connection each time, so that several API processes all get asked.
        response = httpx.get(f"{url.rstrip('/')}/readyz", timeout=5)
        body = response.json()
        models = str(body["checks"]["models"]["detail"])
    except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
        return None, f"no answer ({type(exc).__name__})", None
    seen = f"{body.get('status')}; models: {models}"
    process = response.headers.get(PROCESS_HEADER)
    if body.get("status") == "ready" and not models.startswith(NO_CHAMPION):
        return models, seen, process
    return None, seen, process


def wait_for_champion(url: str, timeout: float, interval: float = 1.0, processes: int = 1) -> str:
    """The served champion's label once ``processes`` distinct API processes (``serve
    --workers``) have each answered that they serve one; TimeoutError saying what was
    last seen."""
    deadline, seen = time.monotonic() + timeout, "nothing yet"
    serving: set[str | None] = set()
    while time.monotonic() < deadline:
        label, seen, process = _serving(url)
        if label is not None:
            serving.add(process)
            if len(serving) >= processes:
                return label
            time.sleep(0.05)  # soon again: the next answer may come from another process
            continue
        serving.discard(process)
        time.sleep(interval)
    raise TimeoutError(
        f"the API at {url} served no champion from {processes} process(es) within "
        f"{timeout:.0f}s ({seen})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=240.0)
    parser.add_argument("--processes", type=int, default=1, help="`serve --workers N`: N")
    args = parser.parse_args(argv)
    try:
        label = wait_for_champion(
            f"http://127.0.0.1:{args.port}", args.timeout, processes=args.processes
        )
    except TimeoutError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"serving {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
