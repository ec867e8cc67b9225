#!/usr/bin/env bash
# Start the services the tests need, run the whole suite, stop what was started.
#
# With no arguments the unit tests (which need no services) run beside the integration and
# end-to-end tests, as two pytest processes with their own temporary folders: most of an
# integration test's time is spent waiting for the processes it starts, so the two share
# the two cores well. The integration tests that train through Ray Train (marker `ray`)
# run in the unit tests' process, after them, and so do the tests of a private three-node
# Kafka cluster (marker `cluster`, self-contained on ports of their own): the two halves
# then take about as long, and no two Ray trainings compete for the cores. With
# arguments, one pytest runs them as given.
set -euo pipefail
cd "$(dirname "$0")/.."
# The tests' own services, on other ports and folders than `make demo`'s, so that neither
# `make test` nor `bash scripts/test.sh <tests>` stops or fills a running demo; a variable
# already set (another checkout's ports) wins.
export STREAMREC_STATE_DIR="${STREAMREC_STATE_DIR:-$PWD/var/test-state}"
export STREAMREC_DATA_DIR="${STREAMREC_DATA_DIR:-$PWD/var/test-data}"
export STREAMREC_KAFKA_PORT="${STREAMREC_KAFKA_PORT:-19092}"
export STREAMREC_KAFKA_CONTROLLER_PORT="${STREAMREC_KAFKA_CONTROLLER_PORT:-19093}"
export STREAMREC_REDIS_PORT="${STREAMREC_REDIS_PORT:-16379}"
export STREAMREC_PROMETHEUS_PORT="${STREAMREC_PROMETHEUS_PORT:-19090}"
STREAMREC=.venv/bin/streamrec
PYTEST=(.venv/bin/pytest -q -p no:cacheprovider --durations=15)

root=$(mktemp -d)
cleanup() {
  if [[ -n "${unit_pid:-}" ]]; then
    pkill -TERM -P "$unit_pid" 2>/dev/null || true
    kill "$unit_pid" 2>/dev/null || true
  fi
  "$STREAMREC" services down || true
  rm -rf "$root"
}
trap cleanup EXIT
"$STREAMREC" services up

if (($# > 0)); then
  [[ "$*" != *deploy* ]] || make -s install-helm  # the chart's checks need helm
  "${PYTEST[@]}" "$@"
  exit
fi

{
  # helm (for tests/deploy) builds while the unit tests run: minutes of compiling that
  # would otherwise come before every test.
  make -s install-helm >"$root/helm.log" 2>&1 &
  helm_pid=$!
  unit=0
  "${PYTEST[@]}" --basetemp "$root/unit" tests/unit || unit=$?
  wait "$helm_pid" || { echo "make install-helm failed:"; cat "$root/helm.log"; unit=1; }
  "${PYTEST[@]}" --basetemp "$root/deploy" tests/deploy || unit=$((unit | $?))
  "${PYTEST[@]}" --basetemp "$root/cluster" -m cluster tests/integration tests/e2e || unit=$((unit | $?))
  "${PYTEST[@]}" --basetemp "$root/ray" -m ray tests/integration tests/e2e || unit=$((unit | $?))
  exit "$unit"
} >"$root/unit.log" 2>&1 &
unit_pid=$!
status=0
"${PYTEST[@]}" --basetemp "$root/services" -m "not ray and not cluster" tests/integration tests/e2e || status=$?
unit_status=0
wait "$unit_pid" || unit_status=$?
unit_pid=
echo "== unit, deploy, Kafka cluster and Ray Train tests (run beside the above) =="
cat "$root/unit.log"
if ((status != 0 || unit_status != 0)); then
  echo "failed: integration/e2e exit $status, unit/deploy/cluster/ray exit $unit_status"
  exit 1
fi
