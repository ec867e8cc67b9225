#!/usr/bin/env bash
# `make demo`: services, MovieLens-100K replayed into Kafka, the worker, the archive, the
# trained cascade (`streamrec train`, a few minutes) and the API serving its champion.
# `scripts/demo.sh stop` stops the worker, the API and the services.
set -euo pipefail
cd "$(dirname "$0")/.."
STREAMREC=.venv/bin/streamrec
STATE="${STREAMREC_STATE_DIR:-var/state}"
PORT="${STREAMREC_API_PORT:-8000}"
# The cockpit's replay control needs the admin key: a fresh one per demo unless set.
KEY_FILE="$STATE/api-key"
mkdir -p "$STATE"

# SIGTERM, then wait for the process to end (Spark finishes its micro-batch, which needs
# Kafka and Redis still up) up to STREAMREC_STOP_WAIT seconds (60), then SIGKILL it and
# its children (the Spark job's JVM). A bare `kill` left `streamrec spark` and its JVM
# running, at a core and a half, after `make stop` had stopped Kafka under them.
stop_pid() {
  local file="$STATE/$1.pid" pid waited=0 wait_s="${STREAMREC_STOP_WAIT:-60}"
  if [[ -f "$file" ]] && kill -0 "$(cat "$file")" 2>/dev/null; then
    pid="$(cat "$file")"
    kill "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && ((waited < wait_s * 2)); do
      sleep 0.5
      waited=$((waited + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
      pkill -KILL -P "$pid" 2>/dev/null || true
      kill -KILL "$pid" 2>/dev/null || true
      echo "killed $1 (still running ${wait_s} s after SIGTERM)"
    else
      echo "stopped $1"
    fi
  fi
  rm -f "$file"
}

if [[ "${1:-}" == "stop" ]]; then
  stop_pid api
  stop_pid spark
  stop_pid archiver
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

echo "waiting for the worker to fold the replayed log (up to 10 minutes)..."
.venv/bin/python - <<'PY'
import sys, time
from streamrec.settings import load_settings
from streamrec.infra.lag import consumer_lag
settings = load_settings()
group = f"{settings.topic_prefix}worker"
topic = f"{settings.topic_prefix}interactions"
deadline = time.monotonic() + 600
while time.monotonic() < deadline:
    rows = [r for r in consumer_lag(settings.bootstrap_servers) if r.group == group and r.topic == topic]
    if rows and all(r.committed >= 0 for r in rows) and sum(r.lag for r in rows) == 0:
        sys.exit(0)
    time.sleep(2)
print("the worker is still catching up; training from the archive anyway", file=sys.stderr)
PY

# The trained cascade: archive the topics, train from the archive, register the champion.
# STREAMREC_DEMO_TRAIN_ARGS adds `streamrec train` options (e.g. "--seeds 5 --workers 2").
"$STREAMREC" archive --once
"$STREAMREC" train --workers 1 --streaming-events 500 --report-dir reports ${STREAMREC_DEMO_TRAIN_ARGS:-}
# From here the archiver follows the topics, so its group never shows a growing lag.
start_bg archiver "$STREAMREC" archive
# The Spark windows beside the worker (1 h / 24 h item windows, users' long-window
# interests, shown by the cockpit); started after training so the two don't share the
# cores. STREAMREC_DEMO_SPARK=0 leaves it out.
if [[ "${STREAMREC_DEMO_SPARK:-1}" != "0" ]]; then
  start_bg spark "$STREAMREC" spark
fi
if [[ -z "${STREAMREC_API_KEY:-}" ]]; then
  [[ -s "$KEY_FILE" ]] || (umask 077 && .venv/bin/python -c "import secrets; print(secrets.token_hex(16))" >"$KEY_FILE")
  STREAMREC_API_KEY="$(cat "$KEY_FILE")"
fi
export STREAMREC_API_KEY
# STREAMREC_DEMO_API_WORKERS=2 serves from two API processes on the one port (one by
# default: docs/design.md, "The hot paths", says what a second one gave on two cores).
API_WORKERS="${STREAMREC_DEMO_API_WORKERS:-1}"
start_bg api "$STREAMREC" serve --workers "$API_WORKERS"

# The gate promotes a set only if its live cascade beats every live baseline on the
# validation period (reports/eval.md says how it fared); a refused set is not served.
PROMOTED="$(.venv/bin/python -c "import json; print(json.load(open('reports/eval.json'))['gate']['promoted'])" 2>/dev/null || echo False)"
if [[ "$PROMOTED" == "True" ]]; then
  SERVED="The API serves the champion cascade trained above"
  echo "waiting for the API to load the champion set..."
  .venv/bin/python -m api.wait --port "$PORT" --processes "$API_WORKERS" --timeout 180 ||
    echo "the API still serves the baseline item-kNN; see $STATE/api.log"
else
  SERVED="The gate refused the set trained above (reports/eval.md: it must beat the live
baselines); the API serves an earlier champion if there is one, else the baseline item-kNN"
  .venv/bin/python -m api.wait --port "$PORT" --timeout 20 >/dev/null 2>&1 || true
fi

cat <<MSG

streamrec is running.
  cockpit          http://127.0.0.1:$PORT/ui
                   (its replay asks for the admin key: STREAMREC_API_KEY, or the one in $KEY_FILE)
  recommendations  curl 'http://127.0.0.1:$PORT/recommend?user_id=196&k=10'
  live stream      curl -N 'http://127.0.0.1:$PORT/recommend/stream?user_id=196&k=10'
  send an event    curl -X POST http://127.0.0.1:$PORT/events -H 'content-type: application/json' \\
                     -d '{"user_id": "196", "item_id": "50", "action": "click"}'
  API docs         http://127.0.0.1:$PORT/docs
  metrics          http://127.0.0.1:$PORT/metrics
  prometheus       http://127.0.0.1:${STREAMREC_PROMETHEUS_PORT:-9090}  (dashboards: deploy/grafana)
  evaluation       reports/eval.md  (reports/eval.json; MLflow runs under $STATE/mlflow)
  services + lag   $STREAMREC services status
  logs             $STATE/worker.log  $STATE/api.log  $STATE/archiver.log  $STATE/spark.log
                   $STATE/kafka/kafka.log
  stop everything  make stop

$SERVED; \`model_version\` in each response names what answered.
MSG
