"""Benchmark 5: one tenant with 10,000 integrations.

Row a, in-process: the time to bring that tenant's stored report up to date after one result
changes (Prober.sync of the one state, then Prober.write_reports(now, force=True)), against a
from-scratch rebuild in the same run (report.encode(report.build_report(...)) plus the same
Redis write). The two alternate, BENCH_BIG_UPDATES (200) times each; each side's median is compared.
Row b: the real prober process's probes/s on 1 tenant x 10,000 integrations against the same
prober on 1,000 tenants x 10, counted at the bench upstream over a steady window, as in
bench/probe.py; the interval is short enough that the prober is always saturated.
Settings: BENCH_BIG_INTEGRATIONS (10000), BENCH_BIG_UPDATES (200), BENCH_BIG_LATENCY (0.05 s),
BENCH_BIG_CONCURRENCY (64), BENCH_BIG_TICK (0.2 s), BENCH_BIG_WARMUP (3 s), BENCH_BIG_WINDOW (10 s),
BENCH_BIG_ROUNDS (2).
"""
from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

from status_service import report
from status_service.model import Health, State
from status_service.prober import REPORT_BYTES_PER_S, Prober
from status_service.registry import load as load_registry
from status_service.store import Store, connect

from .common import (
    Redis, Row, Upstream, env_float, env_int, log, machine_line, print_table, redis_server, run_main, service_env,
    steady_prober_rate, workdir, write_config,
)

INTEGRATIONS = env_int("BENCH_BIG_INTEGRATIONS", 10000)
UPDATES = env_int("BENCH_BIG_UPDATES", 200)
LATENCY_S = env_float("BENCH_BIG_LATENCY", 0.05)
CONCURRENCY = env_int("BENCH_BIG_CONCURRENCY", 64)
TICK_S = env_float("BENCH_BIG_TICK", 0.2)
WARMUP_S = env_float("BENCH_BIG_WARMUP", 3)
WINDOW_S = env_float("BENCH_BIG_WINDOW", 10)
ROUNDS = env_int("BENCH_BIG_ROUNDS", 2)  # the two layouts alternate this many times
SMALL_PER_TENANT = 10  # the comparison layout: INTEGRATIONS / 10 tenants x 10
CLOSED_PORT_URL = "http://127.0.0.1:9"  # row a never probes


# -- row a: one changed result ----------------------------------------------------------------
def healthy(latency_ms: int, now: float, fence: int) -> State:
    """Return a healthy state with the given latency, checked now, under the given fence."""
    return State(Health.HEALTHY, now, latency_ms=latency_ms, consecutive_successes=1, fence=fence)


def update_times(redis: Redis, directory: Path) -> dict:
    """Time UPDATES incremental updates and as many full rebuilds, alternating; check both give the same bytes."""
    config = directory / "rebuild.yaml"
    write_config(config, 1, INTEGRATIONS, CLOSED_PORT_URL, {"interval_seconds": 3600})  # nothing turns stale
    registry = load_registry(config, os.environ)
    tenant = registry.tenants[0]
    integrations = tenant.integrations
    client = connect(redis.url, 10.0)
    store = Store(client, "bench:big:rebuild:")
    full_store = Store(client, "bench:big:full:")  # the baseline writes its own report key, versions of its own
    prober = Prober(registry, store)
    now = time.time()
    prober.ensure_seeded(now)
    states = {i.id: healthy(100, now, 1) for i in integrations}
    prober.sync({tenant.id: ("", -1, {iid: (0, s) for iid, s in states.items()})}, now)
    prober.write_reports(now, force=True)
    size = len(prober.views[tenant.id].report.body(now))
    log(f"rebuild: 1 tenant x {len(integrations)} integrations, report {size:,} bytes; {UPDATES} updates each way")

    incremental, full = [], []
    client.set(full_store.registry_key(tenant.id), prober.tenant_prints[tenant.id])  # its reports are taken as seeded
    for n in range(UPDATES):
        iid = integrations[(n * 7919) % len(integrations)].id  # spread over the report
        before = states[iid]
        now = time.time()
        after = states[iid] = healthy(100 + (n % 900) + 1, now, before.fence + 1)

        # The prober's way: write the one state, render its row, write the report.
        started = time.perf_counter()
        view = prober.views[tenant.id]
        prober.sync({tenant.id: (view.incarnation, view.version, {iid: (before.fence, after)})}, now)
        prober.write_reports(now, force=True)
        incremental.append(time.perf_counter() - started)

        # From scratch: every row rendered and encoded again, the same stale times, the same write.
        started = time.perf_counter()
        body = report.encode(report.build_report(integrations, states, now))
        stale = {i.id: states[i.id].checked_at + i.probe.stale_after_s for i in integrations}
        full_store.put_reports([(tenant.id, n + 1, body, stale, report.next_stale(stale, now))], prober.tenant_prints)
        full.append(time.perf_counter() - started)

    # Both ways must have stored the same document.
    mine = client.hget(store.report_key(tenant.id), "body")
    theirs = client.hget(full_store.report_key(tenant.id), "body")
    if json.loads(mine) != json.loads(theirs):
        raise RuntimeError("the incrementally kept report differs from the rebuilt one")
    exact = mine == theirs
    prober.pool.shutdown(wait=False)
    prober.fetcher.close()
    return {
        "incremental": statistics.median(incremental),
        "full": statistics.median(full),
        "incremental_p90": statistics.quantiles(incremental, n=10)[-1],
        "full_p90": statistics.quantiles(full, n=10)[-1],
        "size": size,
        "exact": exact,
    }


# -- row b: the prober process on one big tenant ------------------------------------------------
def layout_config(directory: Path, upstream: Upstream, tenants: int, per_tenant: int) -> Path:
    """Write a config of tenants x per_tenant integrations at interval 1 s (always due)."""
    path = directory / f"layout-{tenants}x{per_tenant}.yaml"
    write_config(
        path, tenants, per_tenant, upstream.base_url,
        probe={"interval_seconds": 1}, prober={"concurrency": CONCURRENCY, "tick_seconds": TICK_S},
    )
    return path


def measure_prober(redis: Redis, upstream: Upstream, directory: Path, config: Path, tenants: int, per_tenant: int, tag: str) -> dict:
    """Run one real prober process and count its steady probes/s at the upstream; read back its results."""
    prefix = f"bench:big:{tag}:"
    measured = steady_prober_rate(service_env(redis, prefix, config), upstream, directory, tag, WARMUP_S, WINDOW_S)
    client = connect(redis.url, 10.0)
    store = Store(client, prefix)
    wanted = {f"tenant{t:05d}": [str(i + 1) for i in range(per_tenant)] for t in range(tenants)}
    states = store.states(wanted)
    recorded = sum(len(by_id) for by_id in states.values())
    good = sum(s.status is Health.HEALTHY for by_id in states.values() for s in by_id.values())
    biggest = max(client.hstrlen(store.report_key(t), "body") for t in wanted)
    return {**measured, "recorded": recorded, "healthy": good, "report_bytes": biggest}


def mean(runs: list[dict]) -> dict:
    """Average each measurement over the rounds."""
    return {k: sum(r[k] for r in runs) / len(runs) for k in runs[0]}


def main() -> int:
    """Row a in-process, then the two prober layouts alternating for ROUNDS rounds."""
    small_tenants = INTEGRATIONS // SMALL_PER_TENANT
    layouts = {"big": (1, INTEGRATIONS), "small": (small_tenants, SMALL_PER_TENANT)}
    runs: dict[str, list[dict]] = {name: [] for name in layouts}
    with workdir("bigtenant") as directory, redis_server(directory / "redis") as redis:
        machine = machine_line(redis)
        times = update_times(redis, directory)
        log(f"  median: incremental {times['incremental'] * 1000:.1f} ms, full rebuild {times['full'] * 1000:.1f} ms")
        upstream = Upstream(LATENCY_S, directory / "upstream.log")
        try:
            configs = {name: layout_config(directory, upstream, *shape) for name, shape in layouts.items()}
            for round_ in range(ROUNDS):  # alternate, so a slow spell of the machine hits both alike
                for name, (tenants, per_tenant) in layouts.items():
                    log(f"prober: {tenants} tenant(s) x {per_tenant}, interval 1s, concurrency {CONCURRENCY}, tick {TICK_S:g}s")
                    r = measure_prober(redis, upstream, directory, configs[name], tenants, per_tenant, f"{name}{round_}")
                    runs[name].append(r)
                    log(f"  {r['rate']:,.0f} probes/s ({r['hits']:,} in {WINDOW_S:.0f}s; prober CPU {r['cpu']:.0f}%, "
                        f"machine CPU {r['busy']:.0f}%, healthy {r['healthy']}/{r['recorded']})")
        finally:
            upstream.close()
    big, small = mean(runs["big"]), mean(runs["small"])
    ms = 1000
    rows = [
        Row(f"1 tenant x {INTEGRATIONS}: report update after 1 changed result (median)",
            times["incremental"] * ms, times["full"] * ms, "<= 0.25", "ms"),
        Row(f"prober, 1 tenant x {INTEGRATIONS} vs {small_tenants} tenants x {SMALL_PER_TENANT}",
            big["rate"], small["rate"], ">= 0.8", "probes/s"),
    ]
    notes = [
        machine,
        f"row a: Prober.sync of 1 changed state + write_reports(now, force=True), vs report.encode(report.build_report(...)) "
        f"+ the same stale times and Redis write (put_reports), alternating, {UPDATES} each; report {times['size']:,} bytes; "
        f"p90 {times['incremental_p90'] * ms:.1f} ms vs {times['full_p90'] * ms:.1f} ms; "
        f"stored bodies {'byte for byte equal' if times['exact'] else 'equal as JSON'}",
        f"row b: interval 1s (demand {INTEGRATIONS:,}/s), upstream latency {LATENCY_S * 1000:.0f} ms, concurrency {CONCURRENCY} "
        f"(ceiling {CONCURRENCY / LATENCY_S:,.0f} probes/s), tick {TICK_S:g}s; mean of {ROUNDS} alternating rounds, "
        f"each {WINDOW_S:.0f}s after {WARMUP_S:.0f}s warm-up",
        "probes counted per round: 1 tenant " + ", ".join(f"{r['hits']:,}" for r in runs["big"])
        + f"; {small_tenants} tenants " + ", ".join(f"{r['hits']:,}" for r in runs["small"]),
        f"prober CPU: 1 tenant {big['cpu']:.0f}%, {small_tenants} tenants {small['cpu']:.0f}% of a core; "
        f"machine CPU {big['busy']:.0f}% / {small['busy']:.0f}%",
        f"results read back healthy: 1 tenant {big['healthy']:.0f}/{big['recorded']:.0f}, "
        f"{small_tenants} tenants {small['healthy']:.0f}/{small['recorded']:.0f}; largest report body "
        f"{big['report_bytes']:,.0f} vs {small['report_bytes']:,.0f} bytes (rewritten at most {REPORT_BYTES_PER_S / 2**20:.0f} MiB/s)",
    ]
    print_table(f"bigtenant: one tenant with {INTEGRATIONS:,} integrations", rows, notes)
    return 0


if __name__ == "__main__":
    run_main(main)
