"""Benchmark 2: probes/s of the real prober process against a bare requests + thread-pool loop, history's cost, and provider checks'.

The prober runs with history on (the default), again with it off (the second row is their ratio), and
again with every integration a built-in OpenAI check on the same fake (the third row: provider checks
against generic probes, with their fleet-wide rate cap, correlation records and status page polling).

Both fetch the same N distinct paths from bench/upstream.py (fixed latency) at concurrency C;
throughput is counted by the upstream over a steady window after a warm-up.
Settings: BENCH_PROBE_INTEGRATIONS (2000), BENCH_PROBE_CONCURRENCY (64), BENCH_PROBE_LATENCY (0.05 s),
BENCH_PROBE_TICK (0.2 s), BENCH_PROBE_EXTRA_TICK (unset; e.g. 0.05 adds a row at that tick),
BENCH_PROBE_WARMUP (3 s), BENCH_PROBE_WINDOW (10 s), BENCH_PROBE_ROUNDS (2).
"""
from __future__ import annotations

import itertools
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter

from status_service.model import Health
from status_service.store import Store, connect

from .common import (
    Monitor, Redis, Row, Upstream, env_float, env_int, integration_path, log, machine_line, print_table,
    rate_over_window, redis_server, run_main, service_env, steady_prober_rate, workdir, write_config,
)

INTEGRATIONS = env_int("BENCH_PROBE_INTEGRATIONS", 2000)
PER_TENANT = 10
CONCURRENCY = env_int("BENCH_PROBE_CONCURRENCY", 64)
LATENCY_S = env_float("BENCH_PROBE_LATENCY", 0.05)
TICK_S = env_float("BENCH_PROBE_TICK", 0.2)
EXTRA_TICK = os.environ.get("BENCH_PROBE_EXTRA_TICK", "").strip()  # e.g. 0.05 adds a row at that tick
WARMUP_S = env_float("BENCH_PROBE_WARMUP", 3)
WINDOW_S = env_float("BENCH_PROBE_WINDOW", 10)
ROUNDS = env_int("BENCH_PROBE_ROUNDS", 2)  # bare loop and prober alternate this many times
MAX_FETCHES = 1_000_000  # the bare loop's hard count bound


def bare_loop(urls: list[str], concurrency: int, duration_s: float, failures: list[int]) -> None:
    """GET the urls round-robin from `concurrency` threads over one pooled Session until duration_s has passed."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=concurrency, pool_maxsize=concurrency, max_retries=0)
    session.mount("http://", adapter)
    cycle, lock = itertools.cycle(urls), threading.Lock()
    stop_at = time.monotonic() + duration_s
    budget = itertools.count()

    def worker() -> None:
        """Fetch and check one URL after another until the deadline or the count bound."""
        while time.monotonic() < stop_at and next(budget) < MAX_FETCHES:
            with lock:
                url = next(cycle)
            try:
                response = session.get(url, timeout=5)
                if response.status_code != 200 or response.json()["status"]["indicator"] != "none":
                    failures.append(1)
            except (requests.RequestException, ValueError, KeyError):
                failures.append(1)

    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(worker) for _ in range(concurrency)]:
            future.result()
    session.close()


def measure_bare(upstream: Upstream, tenants: int) -> dict:
    """Run the bare loop in a background thread and count its steady rate at the upstream."""
    urls = [upstream.base_url + integration_path(t, i) for t in range(tenants) for i in range(PER_TENANT)]
    failures: list[int] = []
    runner = threading.Thread(target=bare_loop, args=(urls, CONCURRENCY, WARMUP_S + WINDOW_S + 1, failures))
    monitor = Monitor(os.getpid())
    upstream.reset()
    runner.start()
    time.sleep(WARMUP_S)
    monitor.mark("start")
    rate, _, busy = rate_over_window(upstream.total, 0, WINDOW_S)
    monitor.mark("end")
    runner.join(30)
    monitor.close()
    return {"rate": rate, "busy": busy, "cpu": monitor.cpu_percent("start", "end"), "failures": len(failures)}


def measure_prober(redis: Redis, upstream: Upstream, directory: Path, tenants: int, tick_s: float, round_: int,
                   history: bool = True, provider: str = "") -> dict:
    """Run one real prober process on the N integrations (probes, or `provider`'s checks) and count its steady rate from the upstream."""
    name = f"tick{tick_s}-{'history' if history else 'nohistory'}{'-' + provider if provider else ''}"
    config = directory / f"probe-{name}.yaml"
    # The provider's cap well above the ceiling: what is measured is the checks' own cost, not the cap.
    providers = {provider: {"base_url": upstream.base_url, "status_page": upstream.base_url, "max_requests_per_second": 1e5}} \
        if provider else {}
    write_config(
        config, tenants, PER_TENANT, upstream.base_url,
        probe={"interval_seconds": 1}, prober={"concurrency": CONCURRENCY, "tick_seconds": tick_s},
        history={"enabled": history}, provider=provider, **({"providers": providers} if providers else {}),
    )
    prefix = f"bench:probe:{name}:{round_}:"
    measured = steady_prober_rate(service_env(redis, prefix, config), upstream, directory, f"{name}-{round_}", WARMUP_S, WINDOW_S)
    wanted = {f"tenant{t:05d}": [str(i + 1) for i in range(PER_TENANT)] for t in range(tenants)}
    states = Store(connect(redis.url, 10.0), prefix).states(wanted)
    healthy = sum(s.status is Health.HEALTHY for by_id in states.values() for s in by_id.values())
    recorded = sum(len(by_id) for by_id in states.values())
    return {"rate": measured["rate"], "busy": measured["busy"], "cpu": measured["cpu"], "healthy": healthy, "recorded": recorded}


def mean(runs: list[dict]) -> dict:
    """Average each measurement over the rounds."""
    return {k: sum(r[k] for r in runs) / len(runs) for k in runs[0]}


def main() -> int:
    """Alternate the bare loop and the prober (at the configured tick, optionally a second one) for ROUNDS rounds."""
    tenants = INTEGRATIONS // PER_TENANT
    ticks = [TICK_S] + ([float(EXTRA_TICK)] if EXTRA_TICK else [])
    bare_runs: list[dict] = []
    prober_runs: dict[float, list[dict]] = {tick: [] for tick in ticks}
    quiet_runs: list[dict] = []  # the prober with history off, the baseline of history's cost
    check_runs: list[dict] = []  # the prober with provider checks instead of probes
    with workdir("probe") as directory, redis_server(directory / "redis") as redis:
        machine = machine_line(redis)
        upstream = Upstream(LATENCY_S, directory / "upstream.log")
        try:
            for round_ in range(ROUNDS):
                log(f"bare loop: {tenants * PER_TENANT} paths, concurrency {CONCURRENCY}, upstream latency {LATENCY_S * 1000:.0f} ms")
                b = measure_bare(upstream, tenants)
                bare_runs.append(b)
                log(f"  {b['rate']:,.0f} probes/s (loop CPU {b['cpu']:.0f}%, machine CPU {b['busy']:.0f}%, failures {b['failures']})")
                for tick in ticks:
                    log(f"prober: tick {tick}s, concurrency {CONCURRENCY}, interval 1s")
                    r = measure_prober(redis, upstream, directory, tenants, tick, round_)
                    prober_runs[tick].append(r)
                    log(f"  {r['rate']:,.0f} probes/s (prober CPU {r['cpu']:.0f}%, machine CPU {r['busy']:.0f}%, healthy {r['healthy']}/{r['recorded']})")
                log(f"prober: tick {TICK_S}s, history off")
                r = measure_prober(redis, upstream, directory, tenants, TICK_S, round_, history=False)
                quiet_runs.append(r)
                log(f"  {r['rate']:,.0f} probes/s (prober CPU {r['cpu']:.0f}%, machine CPU {r['busy']:.0f}%)")
                log(f"prober: tick {TICK_S}s, every integration an OpenAI provider check")
                r = measure_prober(redis, upstream, directory, tenants, TICK_S, round_, provider="openai")
                check_runs.append(r)
                log(f"  {r['rate']:,.0f} checks/s (prober CPU {r['cpu']:.0f}%, machine CPU {r['busy']:.0f}%, healthy {r['healthy']}/{r['recorded']})")
        finally:
            upstream.close()
    b = mean(bare_runs)
    results = {tick: mean(runs) for tick, runs in prober_runs.items()}
    quiet = mean(quiet_runs)
    checked = mean(check_runs)
    rows = [Row(f"prober, tick {TICK_S:g}s", results[TICK_S]["rate"], b["rate"], ">= 0.8", "probes/s"),
            Row("prober, history on vs off", results[TICK_S]["rate"], quiet["rate"], ">= 0.9", "probes/s"),
            Row("prober, provider checks vs generic probes", checked["rate"], results[TICK_S]["rate"], ">= 0.9", "probes/s")]
    if EXTRA_TICK:
        rows.append(Row(f"prober, tick {float(EXTRA_TICK):g}s", results[float(EXTRA_TICK)]["rate"], b["rate"], None, "probes/s"))
    notes = [
        machine,
        f"{tenants * PER_TENANT} integrations ({tenants} tenants x {PER_TENANT}), interval 1s (always due), concurrency {CONCURRENCY}, "
        f"upstream latency {LATENCY_S * 1000:.0f} ms: ceiling {CONCURRENCY / LATENCY_S:,.0f} probes/s; "
        f"mean of {ROUNDS} alternating rounds, each {WINDOW_S:.0f}s after {WARMUP_S:.0f}s warm-up",
        "per round, bare loop: " + ", ".join(f"{r['rate']:,.0f}" for r in bare_runs)
        + "; prober: " + ", ".join(f"{r['rate']:,.0f}" for r in prober_runs[TICK_S])
        + "; prober, history off: " + ", ".join(f"{r['rate']:,.0f}" for r in quiet_runs)
        + "; prober, provider checks: " + ", ".join(f"{r['rate']:,.0f}" for r in check_runs) + " probes/s",
        f"provider checks: {checked['healthy']:.0f}/{checked['recorded']:.0f} recorded results healthy, prober CPU {checked['cpu']:.0f}%",
        f"baseline: requests.Session (pool {CONCURRENCY}) + ThreadPoolExecutor({CONCURRENCY}) in one process: "
        f"CPU {b['cpu']:.0f}% of a core, machine CPU {b['busy']:.0f}%, {b['failures']:.0f} failed fetches",
    ] + [
        f"prober tick {tick:g}s: process CPU {r['cpu']:.0f}% of a core, machine CPU {r['busy']:.0f}%, "
        f"{r['healthy']:.0f}/{r['recorded']:.0f} recorded results healthy"
        for tick, r in results.items()
    ]
    print_table("probe: prober process vs bare requests loop", rows, notes)
    return 0


if __name__ == "__main__":
    run_main(main)
