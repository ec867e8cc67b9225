#!/usr/bin/env bash
# `make api-check`: issue 3's "query the running API" check on MovieLens-100K, on its own
# broker, Redis, state folder and ports (so a running demo is not disturbed):
#   replay the log up to T (the start of the offline test period), fold it into the online
#   store, archive it, `streamrec train --until T`, serve the champion, and score
#   GET /recommend for every user with events after T against the baselines.
# Writes reports/api-check/ (eval.json, eval.md of the training run, api_check.json).
set -euo pipefail
cd "$(dirname "$0")/.."
STREAMREC=.venv/bin/streamrec
# A fresh state folder each run (so the champion is the set trained here), unless given one.
if [[ -z "${API_CHECK_STATE_DIR:-}" ]]; then
  rm -rf var/api-check
fi
export STREAMREC_STATE_DIR="${API_CHECK_STATE_DIR:-var/api-check}"
export STREAMREC_KAFKA_PORT=29092 STREAMREC_KAFKA_CONTROLLER_PORT=29093 STREAMREC_REDIS_PORT=26379
export STREAMREC_API_PORT=8100 STREAMREC_WORKER_PORT=6166
export STREAMREC_TOPIC_PREFIX="${API_CHECK_PREFIX:-streamrec.apicheck.$(date +%s).}"
REPORTS=reports/api-check
mkdir -p "$STREAMREC_STATE_DIR" "$REPORTS"

api_pid=""
cleanup() {
  [[ -n "$api_pid" ]] && kill "$api_pid" 2>/dev/null || true
  "$STREAMREC" services down >/dev/null 2>&1 || true
}
trap cleanup EXIT

"$STREAMREC" services up
"$STREAMREC" data fetch movielens-100k
"$STREAMREC" data prepare movielens-100k
"$STREAMREC" features apply

# T: the first event of the offline protocol's test period (the 90 % event-time quantile).
UNTIL=$(.venv/bin/python - <<'PY'
from streamrec.settings import load_settings
from streamrec.times import format_ms
from training.data.split import event_log_path, load_events, time_split
events = load_events(event_log_path(load_settings().data_dir, "movielens-100k"))
print(format_ms(time_split(events).validation_end_ms))
PY
)
echo "T = $UNTIL"

"$STREAMREC" replay movielens-100k --speed max --until "$UNTIL"
"$STREAMREC" backfill --from-beginning
"$STREAMREC" archive --once
"$STREAMREC" train --until "$UNTIL" --workers 1 --streaming-events 0 --report-dir "$REPORTS" \
  ${API_CHECK_TRAIN_ARGS:-}

"$STREAMREC" serve >"$STREAMREC_STATE_DIR/api.log" 2>&1 &
api_pid=$!
.venv/bin/python -m api.wait --port "$STREAMREC_API_PORT" --timeout 240
"$STREAMREC" evaluate-api --until "$UNTIL" --source movielens-100k \
  --url "http://127.0.0.1:$STREAMREC_API_PORT" --out "$REPORTS/api_check.json"
