#!/usr/bin/env bash
# Set up, then run the whole test suite. Uses $REDIS_URL when set, else an embedded Redis.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
