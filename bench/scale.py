"""Benchmarks 3 and 4: 10,000 integrations on one prober (every interval kept?), then 1, 2 and 4 probers.

`python -m bench.scale atscale`: 1,000 tenants x 10 integrations, interval 30 s, upstream latency
100 ms, one prober for BENCH_SCALE_SECONDS (75) after its first probe: integrations that missed an
interval, the prober's CPU% and peak RSS, Redis bytes per integration.
`python -m bench.scale scaleout`: the same 10,000 integrations and one Redis with 1, 2 and 4 probers;
capacity with interval 1 s (demand far above capacity), then duplicates with BENCH_DUP_PROBERS (4)
probers at interval 30 s for BENCH_DUP_SECONDS (70).
Other settings: BENCH_SCALE_TENANTS (1000), BENCH_SCALE_PER_TENANT (10), BENCH_SCALE_LATENCY (0.1 s),
BENCH_SCALE_CONCURRENCY (64) and BENCH_SCALE_TICK (1 s), the project's defaults; BENCH_SCALE_WARMUP (3 s),
BENCH_SCALE_WINDOW (10 s), BENCH_SCALEOUT_COUNTS ("1 2 4").
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .common import (
    Monitor, Redis, Row, Upstream, env_float, env_int, integration_path, log, machine_line, print_table,
    rate_over_window, redis_server, run_main, service_env, start_probers, stop_probers, wait_until, workdir, write_config,
)

TENANTS = env_int("BENCH_SCALE_TENANTS", 1000)
PER_TENANT = env_int("BENCH_SCALE_PER_TENANT", 10)
LATENCY_S = env_float("BENCH_SCALE_LATENCY", 0.1)
INTERVAL_S = 30.0
CONCURRENCY = env_int("BENCH_SCALE_CONCURRENCY", 64)
TICK_S = env_float("BENCH_SCALE_TICK", 1.0)
RUN_S = env_float("BENCH_SCALE_SECONDS", 75)
WARMUP_S = env_float("BENCH_SCALE_WARMUP", 3)
WINDOW_S = env_float("BENCH_SCALE_WINDOW", 10)
COUNTS = [int(n) for n in (os.environ.get("BENCH_SCALEOUT_COUNTS") or "1 2 4").split()]
DUP_PROBERS = env_int("BENCH_DUP_PROBERS", 4)
DUP_S = env_float("BENCH_DUP_SECONDS", 70)
GRACE_S = TICK_S + 1.0  # a probe may start up to a tick (plus a claim round trip) after it is due


@dataclass
class Coverage:
    """What the upstream's hit timestamps say about every integration over [start, end]."""

    integrations: int
    never: int  # never probed
    missed: int  # integrations with a gap longer than the interval (+ grace) in the window, or no probe in it
    max_gap_s: float
    first_round_s: float  # from the first probe of all to the last integration's first probe
    duplicates: int  # consecutive hits of one integration closer than half an interval
    near_duplicates: int  # ... of which closer than 1 s (two probers probing at once)
    hits: int


def coverage(hits: dict[str, list[float]], paths: list[str], interval_s: float, start: float, end: float) -> Coverage:
    """Check every path was hit in every interval of [start, end] after its first hit there; count hits too close together.

    Duplicates are counted over every hit up to `end`, start-up included.
    """
    firsts = [min(hits[p]) for p in paths if hits.get(p)]
    never = missed = duplicates = near = total = 0
    max_gap = 0.0
    for path in paths:
        times = sorted(t for t in hits.get(path, []) if t <= end)
        total += len(times)
        gaps = [b - a for a, b in zip(times, times[1:])]
        duplicates += sum(g < interval_s / 2 for g in gaps)
        near += sum(g < 1.0 for g in gaps)
        if not times:
            never += 1
        window = [t for t in times if t >= start]
        if not window:
            missed += 1
            continue
        worst = max([b - a for a, b in zip(window, window[1:])] + [end - window[-1]])
        max_gap = max(max_gap, worst)
        missed += worst > interval_s + GRACE_S
    first_round = max(firsts) - min(firsts) if firsts else 0.0
    return Coverage(len(paths), never, missed, max_gap, first_round, duplicates, near, total)


def all_paths() -> list[str]:
    """Return the upstream path of every integration in the config."""
    return [integration_path(t, i) for t in range(TENANTS) for i in range(PER_TENANT)]


def config(directory: Path, upstream: Upstream, interval_s: float) -> Path:
    """Write the 10,000-integration config with the given interval."""
    path = directory / f"scale-{interval_s:g}s.yaml"
    write_config(
        path, TENANTS, PER_TENANT, upstream.base_url,
        probe={"interval_seconds": interval_s}, prober={"concurrency": CONCURRENCY, "tick_seconds": TICK_S},
    )
    return path


def timed_run(redis: Redis, upstream: Upstream, directory: Path, config_path: Path, probers: int, seconds: float, tag: str):
    """Run probers for `seconds` after all have started and probed; return (coverage, monitor of prober 0, machine CPU %)."""
    upstream.reset()
    running = start_probers(service_env(redis, f"bench:{tag}:", config_path), probers, directory, tag)
    monitor = Monitor(running[0][0].pid)
    start = time.time()
    try:
        wait_until(upstream.total, 30, "the first probe")
        monitor.mark("start")
        log(f"{probers} prober(s) started; running {seconds:.0f}s")
        _, _, busy = rate_over_window(upstream.total, 0, seconds)
        monitor.mark("end")
        end = time.time()
    finally:
        stop_probers(running)
        monitor.close()
    return coverage(upstream.stats(hits=True)["hits"], all_paths(), INTERVAL_S, start, end), monitor, busy


def atscale() -> int:
    """Benchmark 3: one prober, 10,000 integrations at a 30 s interval."""
    n = TENANTS * PER_TENANT
    with workdir("scale") as directory, redis_server(directory / "redis") as redis:
        machine = machine_line(redis)
        empty = redis.info("memory")["used_memory"]
        upstream = Upstream(LATENCY_S, directory / "upstream.log")
        try:
            path = config(directory, upstream, INTERVAL_S)
            log(f"at scale: {n} integrations, interval {INTERVAL_S:g}s, latency {LATENCY_S * 1000:.0f} ms, one prober")
            cov, monitor, busy = timed_run(redis, upstream, directory, path, 1, RUN_S, "atscale")
        finally:
            upstream.close()
        used = redis.info("memory")["used_memory"]
    per_integration = (used - empty) / n
    log(f"  missed {cov.missed}, never {cov.never}, max gap {cov.max_gap_s:.1f}s, first round {cov.first_round_s:.1f}s")
    rows = [
        Row("integrations that missed an interval", cov.missed, None, "== 0"),
        Row("  of which never probed", cov.never, None, None),
        Row("longest gap between probes of one integration", cov.max_gap_s, INTERVAL_S, None, "s"),
        Row("prober CPU, average over the run", monitor.cpu_percent("start", "end"), None, None, "% of a core"),
        Row("prober peak RSS", monitor.peak_rss / 2**20, None, None, "MiB"),
        Row("Redis memory per integration", per_integration, None, None, "bytes"),
    ]
    notes = [
        machine,
        f"{n} integrations ({TENANTS} tenants x {PER_TENANT}), interval {INTERVAL_S:g}s, upstream latency {LATENCY_S * 1000:.0f} ms, "
        f"prober concurrency {CONCURRENCY}, tick {TICK_S:g}s; observed {RUN_S:.0f}s from the first probe ({cov.hits} probes)",
        f"a miss is a gap longer than {INTERVAL_S:g}s + {GRACE_S:g}s grace after an integration's first probe (or no probe at all); "
        f"all first probes took {cov.first_round_s:.1f}s; machine CPU {busy:.0f}%",
        f"Redis: used_memory {used:,} after the run minus {empty:,} when empty, over {n} integrations",
    ]
    print_table("scale: 10,000 integrations on one prober", rows, notes)
    return 0


def scaleout() -> int:
    """Benchmark 4: probes/s with 1, 2 and 4 probers on one Redis, then duplicates at the normal interval."""
    rates: dict[int, tuple[float, float]] = {}
    with workdir("scaleout") as directory, redis_server(directory / "redis") as redis:
        machine = machine_line(redis)
        upstream = Upstream(LATENCY_S, directory / "upstream.log")
        try:
            fast = config(directory, upstream, 1)
            for count in COUNTS:
                redis.client().flushall()
                upstream.reset()
                log(f"capacity: {count} prober(s), interval 1s")
                running = start_probers(service_env(redis, "bench:scaleout:", fast), count, directory, f"cap{count}")
                try:
                    wait_until(upstream.total, 30, "the first probe")
                    rate, _, busy = rate_over_window(upstream.total, WARMUP_S, WINDOW_S)
                finally:
                    stop_probers(running)
                rates[count] = (rate, busy)
                log(f"  {rate:,.0f} probes/s, machine CPU {busy:.0f}%")
            redis.client().flushall()
            log(f"duplicates: {DUP_PROBERS} probers, interval {INTERVAL_S:g}s")
            cov, _, busy = timed_run(redis, upstream, directory, config(directory, upstream, INTERVAL_S), DUP_PROBERS, DUP_S, "dup")
            log(f"  duplicates {cov.duplicates} (<1s: {cov.near_duplicates}), missed {cov.missed}, probes {cov.hits}")
        finally:
            upstream.close()
    rows = []
    for previous, count in zip(COUNTS, COUNTS[1:]):
        rows.append(Row(f"{count} probers vs {previous}: probes/s", rates[count][0], rates[previous][0], "> 1.0", "probes/s"))
    rows += [
        Row(f"{COUNTS[0]} prober(s): probes/s", rates[COUNTS[0]][0], None, None, "probes/s"),
        Row(f"duplicate probes, {DUP_PROBERS} probers, interval {INTERVAL_S:g}s", cov.duplicates, None, "== 0"),
        Row(f"  integrations that missed an interval ({DUP_PROBERS} probers)", cov.missed, None, "== 0"),
    ]
    n = TENANTS * PER_TENANT
    notes = [
        machine,
        f"capacity: {n} integrations at interval 1s (demand {n:,}/s), upstream latency {LATENCY_S * 1000:.0f} ms, "
        f"concurrency {CONCURRENCY} and tick {TICK_S:g}s per prober (ceiling {CONCURRENCY / LATENCY_S:,.0f} probes/s each), "
        f"{WINDOW_S:.0f}s window after {WARMUP_S:.0f}s warm-up",
        "machine CPU during each window: " + ", ".join(f"{c} prober(s) {rates[c][1]:.0f}%" for c in COUNTS),
        f"duplicates: two probes of one integration less than {INTERVAL_S / 2:g}s apart, over {DUP_S:.0f}s after all probers "
        f"started ({cov.hits} probes, {cov.near_duplicates} of them less than 1 s apart); machine CPU {busy:.0f}%",
    ]
    print_table("scaleout: 1, 2, 4 probers on one Redis", rows, notes)
    return 0


def main(argv: list[str]) -> int:
    """Run the benchmarks named on the command line (default: both)."""
    names = argv or ["atscale", "scaleout"]
    for name in names:
        {"atscale": atscale, "scaleout": scaleout}[name]()
    return 0


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
