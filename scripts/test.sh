#!/usr/bin/env bash
# Set up, then run the whole test suite. It uses $TEST_REDIS_URL when set (database 15 unless the URL
# names one; refused if it holds keys the tests did not write), else an embedded Redis. It never
# uses $REDIS_URL, which may name production. The browser tests need Chromium (installed below if
# it is missing and this runs as root on Debian; otherwise they fail, saying so).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The browser tests drive Debian's Chromium: installed here where it is missing and apt can (as root).
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null \
    && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null \
    || echo "scripts/test.sh: could not install chromium; the browser tests will fail, saying so" >&2
fi
unset REDIS_URL
exec .venv/bin/python -m pytest -q "$@"
