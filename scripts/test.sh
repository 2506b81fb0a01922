#!/usr/bin/env bash
# Set up, then run the whole test suite. It uses $TEST_REDIS_URL when set (database 15 unless the URL
# names one; refused if it holds keys the tests did not write), else an embedded Redis. It never
# uses $REDIS_URL, which may name production.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
unset REDIS_URL
exec .venv/bin/python -m pytest -q "$@"
