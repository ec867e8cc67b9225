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

NO_CHAMPION = "no champion"


def serving_label(url: str) -> tuple[str | None, str]:
    """(the champion label when ready and serving one, else None; what was seen)."""
    try:
        body = httpx.get(f"{url.rstrip('/')}/readyz", timeout=5).json()
        models = str(body["checks"]["models"]["detail"])
    except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
        return None, f"no answer ({type(exc).__name__})"
    seen = f"{body.get('status')}; models: {models}"
    if body.get("status") == "ready" and not models.startswith(NO_CHAMPION):
        return models, seen
    return None, seen


def wait_for_champion(url: str, timeout: float, interval: float = 1.0) -> str:
    """The served champion's label; TimeoutError saying what was last seen."""
    deadline, seen = time.monotonic() + timeout, "nothing yet"
    while time.monotonic() < deadline:
        label, seen = serving_label(url)
        if label is not None:
            return label
        time.sleep(interval)
    raise TimeoutError(f"the API at {url} served no champion within {timeout:.0f}s ({seen})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=240.0)
    args = parser.parse_args(argv)
    try:
        label = wait_for_champion(f"http://127.0.0.1:{args.port}", args.timeout)
    except TimeoutError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"serving {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
