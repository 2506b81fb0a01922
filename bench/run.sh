#!/usr/bin/env bash
# Run the benchmarks: `bash bench/run.sh` runs all of them, `bash bench/run.sh serve probe` only those named.
# Names: serve, probe, scale, scaleout, bigtenant, admin, history. Each prints a table of value / baseline / ratio / target.
# Output is also kept in var/bench/last-run.log. Settings are BENCH_* variables (see docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
. .venv/bin/activate

names=("$@")
[ ${#names[@]} -gt 0 ] || names=(serve probe scale scaleout bigtenant admin history)
for name in "${names[@]}"; do
  case "$name" in serve|probe|scale|scaleout|bigtenant|admin|history) ;; *) echo "unknown benchmark: $name (serve, probe, scale, scaleout, bigtenant, admin, history)" >&2; exit 2 ;; esac
done

mkdir -p var/bench
log=var/bench/last-run.log
limit="${BENCH_TIMEOUT_SECONDS:-600}"  # hard stop for each benchmark
loadgen=wrk
if [ "${BENCH_LOADGEN:-}" = python ] || ! command -v wrk >/dev/null; then loadgen="python-asyncio (wrk not used)"; fi

revision="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(GIT_OPTIONAL_LOCKS=0 git status --porcelain -- status_service config wsgi.py 2>/dev/null)" ]; then revision="$revision + uncommitted changes"; fi
echo "status-service benchmarks: $(date -u '+%Y-%m-%d %H:%M UTC'), code $revision, $(nproc) cores, $(python --version 2>&1), load generator: $loadgen" | tee "$log"

failed=0
for name in "${names[@]}"; do
  case "$name" in
    serve) command=(python -m bench.serve) ;;
    probe) command=(python -m bench.probe) ;;
    scale) command=(python -m bench.scale atscale) ;;
    scaleout) command=(python -m bench.scale scaleout) ;;
    bigtenant) command=(python -m bench.bigtenant) ;;
    admin) command=(python -m bench.admin) ;;
    history) command=(python -m bench.history) ;;
  esac
  started=$SECONDS
  set +e
  timeout --kill-after=30 "$limit" "${command[@]}" 2>&1 | tee -a "$log"
  status=${PIPESTATUS[0]}
  set -e
  if [ "$status" -ne 0 ]; then
    echo "benchmark $name FAILED (exit $status)" | tee -a "$log"
    failed=1
  fi
  echo "($name took $((SECONDS - started)) s)" | tee -a "$log"
done
exit "$failed"
