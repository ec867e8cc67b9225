#!/usr/bin/env bash
# `make demo`: services, MovieLens-100K replayed into Kafka, the worker, and the API.
# `scripts/demo.sh stop` stops the worker, the API and the services.
set -euo pipefail
cd "$(dirname "$0")/.."
STREAMREC=.venv/bin/streamrec
STATE="${STREAMREC_STATE_DIR:-var/state}"
PORT="${STREAMREC_API_PORT:-8000}"
mkdir -p "$STATE"

stop_pid() {
  local file="$STATE/$1.pid"
  if [[ -f "$file" ]] && kill -0 "$(cat "$file")" 2>/dev/null; then
    kill "$(cat "$file")" && echo "stopped $1"
  fi
  rm -f "$file"
}

if [[ "${1:-}" == "stop" ]]; then
  stop_pid api
  stop_pid worker
  "$STREAMREC" services down
  exit 0
fi

start_bg() {  # name, command...
  local name="$1"; shift
  stop_pid "$name"
  nohup "$@" >"$STATE/$name.log" 2>&1 &
  echo $! >"$STATE/$name.pid"
}

"$STREAMREC" services up
"$STREAMREC" data fetch movielens-100k
"$STREAMREC" data prepare movielens-100k
"$STREAMREC" features apply
start_bg worker "$STREAMREC" worker
"$STREAMREC" replay movielens-100k --speed max
start_bg api "$STREAMREC" serve

for _ in $(seq 1 120); do
  curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.5
done

cat <<MSG

streamrec is running.
  recommendations  curl 'http://127.0.0.1:$PORT/recommend?user_id=196&k=10'
  live stream      curl -N 'http://127.0.0.1:$PORT/recommend/stream?user_id=196&k=10'
  send an event    curl -X POST http://127.0.0.1:$PORT/events -H 'content-type: application/json' \\
                     -d '{"user_id": "196", "item_id": "50", "action": "click"}'
  API docs         http://127.0.0.1:$PORT/docs
  metrics          http://127.0.0.1:$PORT/metrics
  services + lag   $STREAMREC services status
  logs             $STATE/worker.log  $STATE/api.log  $STATE/kafka/kafka.log
  stop everything  make stop

The worker folds the replayed log for a minute or so; `services status` shows its lag.
MSG
