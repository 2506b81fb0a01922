"""Benchmark 'history': the history endpoints against hello-world, and Redis bytes per integration per day.

Rows:
- GET /status/history?window=30d&step=1h and GET /status/integrations/<id>, on a tenant of 50
  integrations with 30 days of synthetic history (a check every 30 s, outages now and then), each
  against hello-world under the same gunicorn settings and load, alternating;
- Redis memory of history per integration per day, at a 30 s interval, measured on 1,000
  integrations (100 tenants x 10) with 2 days of synthetic history, by kind of key, and extrapolated
  to 10,000 integrations and the full default retention.
The synthetic history goes through the same pure rollup code and the same compaction script as the
prober's: only the raw checks are written directly, under ids at their own times.
Settings: BENCH_HISTORY_SECONDS (10) per load run, BENCH_HISTORY_ROUNDS (2), BENCH_HISTORY_CONNECTIONS (64).
"""
from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

from status_service import rollup
from status_service.model import Health, HistoryOptions, State
from status_service.store import Store, connect
from status_service.store.history import FIVE_MINUTES, HOUR, MINUTE, History, check_text, event_text, packed

from . import load
from .common import (
    TYPES, Redis, Row, env_float, env_int, free_port, http_get, log, machine_line, print_table, redis_server, run_main,
    service_env, stop, workdir, write_config,
)
from .serve import CLOSED_PORT_URL, WORKERS, pooled, seed, start_gunicorn

SECONDS = env_float("BENCH_HISTORY_SECONDS", 10)
ROUNDS = env_int("BENCH_HISTORY_ROUNDS", 2)
CONNECTIONS = env_int("BENCH_HISTORY_CONNECTIONS", 64)
INTERVAL_S = 30
STALE_S = 90
DAY = 86400
KINDS = ("checks", "r300", "r3600", "s60", "s300", "s3600", "events")


def synthetic_checks(rng: random.Random, start: float, end: float) -> list[rollup.Check]:
    """Return a check every 30 s: healthy, but for an outage of a few minutes about twice a day."""
    out, down_until = [], -1.0
    at = start + rng.uniform(0, INTERVAL_S)
    while at < end:
        if at >= down_until and rng.random() < INTERVAL_S / (DAY / 2):
            down_until = at + rng.uniform(60, 900)
        ok = at >= down_until
        out.append(rollup.Check(at, ok, "healthy" if ok else "unhealthy", rng.randint(80, 400) if ok else rng.randint(900, 5000),
                                None if ok else "http_503"))
        at += INTERVAL_S
    return out


def write_history(store: Store, tenant_id: str, types: dict[str, str], days: float, now: float, rng: random.Random) -> None:
    """Write `days` of synthetic history of a tenant's integrations (id -> type), as the prober and compactor would."""
    history, options = History(store), HistoryOptions()
    start = math.floor((now - days * DAY) / HOUR) * HOUR
    end = now - 5
    tracks = [rollup.Track(iid, kind, STALE_S, tuple(synthetic_checks(rng, start, end))) for iid, kind in types.items()]
    base = store.tenant_base(tenant_id)
    pipe = store.client.pipeline(transaction=False)
    events = []
    for track in tracks:
        previous = "unknown"
        for c in track.checks:
            if c.at >= now - options.raw_s:  # raw checks are kept 48 h
                state = State(Health(c.status), c.at, c.reason, c.latency_ms)
                ms, _, text = check_text(state, c.ok).partition("|")  # as the record script keeps it
                pipe.xadd(base + f"checks:{track.id}", {"c": text}, id=f"{ms}-0")
            if c.status != previous:
                events.append((round(c.at * 1000), event_text(c.at, "integration", {"id": track.id, "type": track.type},
                                                              previous, c.status, c.reason)))
                previous = c.status
        pipe.sadd(base + "history:keys", f"checks:{track.id}")
    pipe.delete(base + "events")  # the seed's own status events come after these in time: history replaces them
    last, seq = -1, 0
    for ms, text in sorted(events):  # ids grow, as the record script makes them
        seq = seq + 1 if ms == last else 0
        pipe.xadd(base + "events", {"e": text}, id=f"{ms}-{seq}")
        last = ms
    pipe.set(base + "events:last", f"{last}-{seq}")
    pipe.execute()
    rows: list[tuple[str, float, str]] = []
    for scope, minutes in rollup.scope_points(tracks, start, end, MINUTE).items():
        for size in (MINUTE, FIVE_MINUTES, HOUR):
            rows += packed(f"s{size}:{scope}", [p for p in rollup.merge_points(minutes, size) if p.start >= now - options.keep_s(size)])
    for track in tracks:
        fives = rollup.integration_buckets(track, start, end, FIVE_MINUTES)
        rows += packed(f"r{FIVE_MINUTES}:{track.id}", [b for b in fives if b.start >= now - options.five_minute_s])
        hours = [b.summarized() for b in rollup.merge_buckets(fives, HOUR) if b.start >= now - options.hourly_s]
        rows += packed(f"r{HOUR}:{track.id}", hours)
    for n in range(0, len(rows), 2_000):  # the compaction script, in slices of a size it takes in stride
        if not history.write(tenant_id, history.marks([tenant_id])[tenant_id], end, start, rows[n:n + 2_000], {}):
            raise RuntimeError("the compaction script refused a slice of synthetic history")


def measure(label: str, port: int, path: str, key: str, directory: Path) -> load.LoadResult:
    """Drive one path for SECONDS and log what the load generator saw."""
    r = load.run(port, path, [key], SECONDS, CONNECTIONS, directory)
    log(f"  {label}: {r.rps:,.0f} req/s, p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms, 4xx/5xx {r.errors_4xx_5xx}")
    return r


def serving(redis: Redis, directory: Path) -> dict[str, load.LoadResult]:
    """Measure both history endpoints and hello-world on a tenant of 50 integrations with 30 days of history."""
    config = directory / "history.yaml"
    keys = write_config(config, 1, 50, CLOSED_PORT_URL, {"interval_seconds": 3600})
    prefix = "bench:history:"
    seed(redis, prefix, config)
    store = Store(connect(redis.url, 30.0), prefix)
    log("writing 30 days of synthetic history for 50 integrations")
    started = time.monotonic()
    write_history(store, "tenant00000", {str(i + 1): TYPES[i % len(TYPES)] for i in range(50)}, 30, time.time(), random.Random(7))
    log(f"  written in {time.monotonic() - started:.0f}s")
    paths = {"hello": "/status", "history": "/status/history?window=30d&step=1h", "integration": "/status/integrations/7"}
    ports = {"hello": free_port(), "status": free_port()}
    processes = []
    results: dict[str, list[load.LoadResult]] = {name: [] for name in paths}
    try:
        for label, app in (("hello", "bench.hello:app"), ("status", "wsgi:app")):
            env = service_env(redis, prefix, config, PORT=str(ports[label]), WEB_CONCURRENCY=WORKERS)
            processes.append(start_gunicorn(app, env, ports[label], directory / f"history-{label}.log"))
        auth = {"Authorization": f"Bearer {keys[0]}"}
        for name in ("history", "integration"):
            status, _, body = http_get(ports["status"], paths[name], auth, timeout_s=10)
            document = json.loads(body)
            if status != 200 or (name == "history" and len(document["points"]) < 700) or (
                    name == "integration" and (document["coverage"]["30d"] < 95 or len(document["last_checks"]) != 20)):
                raise RuntimeError(f"{paths[name]} answered {status}: {body[:300]!r}")
        for name in paths:  # warm-up
            load.run(ports["hello" if name == "hello" else "status"], paths[name], keys, 2, CONNECTIONS, directory)
        for _ in range(ROUNDS):
            for name, path in paths.items():
                results[name].append(measure(name, ports["hello" if name == "hello" else "status"], path, keys[0], directory))
    finally:
        for process in processes:
            stop(process)
    return {name: pooled(runs) for name, runs in results.items()}


def memory(redis: Redis) -> dict[str, float]:
    """Return bytes of history per integration per day, by kind of key, on 1,000 integrations x 2 days."""
    prefix = "bench:memory:"
    store = Store(connect(redis.url, 30.0), prefix)
    rng, now = random.Random(11), time.time()
    log("writing 2 days of synthetic history for 1,000 integrations (100 tenants x 10)")
    for t in range(100):
        store.client.set(store.registry_key(f"m{t:03d}"), "0:bench")  # a seeded tenant: the compaction script writes for it
        write_history(store, f"m{t:03d}", {str(i + 1): "MJ" if i % 2 else "DALL-E" for i in range(10)}, 2, now, rng)
    sizes = {kind: 0 for kind in KINDS}
    for key in store.client.scan_iter(match=f"{prefix}*", count=1000):
        name = key.decode().split("}:", 1)[1]
        kind = name.split(":", 1)[0]
        if kind in sizes:
            sizes[kind] += store.client.memory_usage(key, samples=0) or 0
    return {kind: size / (1000 * 2) for kind, size in sizes.items()}


def main() -> int:
    """Measure serving and memory, and print the table."""
    with workdir("history") as directory, redis_server(directory / "redis") as redis:
        machine = machine_line(redis)
        r = serving(redis, directory)
        per_day = memory(redis)
    options = HistoryOptions()
    keep_days = {"checks": options.raw_s / DAY, "r300": options.five_minute_s / DAY, "r3600": options.hourly_s / DAY,
                 "s60": options.raw_s / DAY, "s300": options.five_minute_s / DAY, "s3600": options.hourly_s / DAY,
                 "events": options.events_s / DAY}
    total_per_integration = sum(per_day[k] * keep_days[k] for k in KINDS)
    rows = [
        Row("GET /status/history?window=30d&step=1h", r["history"].rps, r["hello"].rps, ">= 0.5", "req/s"),
        Row("GET /status/integrations/<id>", r["integration"].rps, r["hello"].rps, ">= 0.5", "req/s"),
        Row("4xx and 5xx responses (history endpoints)", r["history"].errors_4xx_5xx + r["integration"].errors_4xx_5xx, None, "== 0"),
        Row("Redis bytes per integration per day", round(sum(per_day.values())), None, None, "B"),
        Row("10,000 integrations, full retention (extrapolated)", round(10_000 * total_per_integration / 2**30, 2), None, None, "GiB"),
    ]
    notes = [
        machine,
        f"load: {r['hello'].tool}, {CONNECTIONS} connections, {ROUNDS} x {SECONDS:.0f}s per path alternating; "
        f"gunicorn -c config/gunicorn.conf.py, WEB_CONCURRENCY={WORKERS}; one tenant of 50 integrations, 30 days of "
        "history (a check every 30 s); p99 ms: " + ", ".join(f"{k} {v.p99_ms:.1f}" for k, v in r.items()),
        "bytes per integration per day by kind (MEMORY USAGE, 1,000 integrations x 2 days): "
        + ", ".join(f"{k} {per_day[k]:,.0f}" for k in KINDS),
        "kept (days): " + ", ".join(f"{k} {keep_days[k]:g}" for k in KINDS)
        + f"; per integration at full retention {total_per_integration / 2**20:.2f} MiB "
        "(tenant series s60/s300/s3600 are per scope, here 10 integrations a tenant in 3 scopes, spread over them)",
    ]
    print_table("history: endpoints vs hello-world, and memory", rows, notes)
    return 0


if __name__ == "__main__":
    run_main(main)
