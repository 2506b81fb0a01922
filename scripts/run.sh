#!/usr/bin/env bash
# Set up, then run the prober and the web tier together until Ctrl-C.
# Without REDIS_URL both share an embedded Redis whose data lives in var/redis/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate

python -m status_service.prober &
prober=$!
trap 'kill -TERM "$prober" 2>/dev/null; wait "$prober" 2>/dev/null' EXIT

echo "status-service: demo API key is 'demo-key'. Try:"
echo "  curl -H 'Authorization: Bearer demo-key' localhost:${PORT:-8000}/status"
gunicorn -c config/gunicorn.conf.py wsgi:app
