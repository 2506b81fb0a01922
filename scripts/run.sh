#!/usr/bin/env bash
# Set up, then run the prober and the web tier together until Ctrl-C.
# Without REDIS_URL both share an embedded Redis whose data lives in ${STATUS_DATA_DIR:-var}/redis/.
# On exit it stops that Redis too if it started it; one that already ran is left running.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate

pids=()
own_redis=""
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    # A stop takes a moment (running probes land first); past 10 s, Ctrl-C must still end it.
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -KILL "$pid" 2>/dev/null; then echo "run.sh: process $pid did not stop within 10 s; killed it" >&2; fi
    wait "$pid" 2>/dev/null || true
  done
  # Last, once nothing uses it; it writes its AOF before it exits.
  if [ -n "$own_redis" ]; then python -m status_service.embedded stop >/dev/null || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -z "${REDIS_URL:-}" ]; then
  # Started here, before its users, so we know whether it is ours to stop. Should it die meanwhile,
  # the prober starts it again in the same folder, and the stop above finds that one.
  state=$(python -m status_service.embedded start)
  if [ "$state" = started ]; then own_redis=1; fi
fi

python -m status_service.prober &
pids+=($!)
gunicorn -c config/gunicorn.conf.py wsgi:app &
pids+=($!)

echo "status-service: demo API key is 'demo-key'. Try:"
echo "  curl -H 'Authorization: Bearer demo-key' localhost:${PORT:-8000}/status"
# Until Ctrl-C, or until either process ends: then the trap stops the other.
wait -n
