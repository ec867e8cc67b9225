#!/usr/bin/env bash
# Start the services the tests need, run the whole suite, stop what was started.
set -euo pipefail
cd "$(dirname "$0")/.."
STREAMREC=.venv/bin/streamrec

cleanup() { "$STREAMREC" services down || true; }
trap cleanup EXIT
"$STREAMREC" services up
.venv/bin/pytest -q -p no:cacheprovider --durations=15 "$@"
