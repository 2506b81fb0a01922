"""Benchmark 1: GET /status under gunicorn against a hello-world Flask app with the same gunicorn settings.

Rows: 1 tenant x 50 integrations (one key), the same polled with If-None-Match (each answer a 304),
and 1,000 tenants x 5 integrations polled round-robin.
Before measuring /status, warm-up loads repeat until one whole warm-up run costs Redis nothing but
the workers' link checks (a pub/sub ping and a generation read a second): every key it sent is then
in its worker's memory, and every worker's subscription is live.
Redis commands per request are counted over the measured runs too.
Settings: BENCH_SERVE_SECONDS (10) per load run, BENCH_SERVE_ROUNDS (2) runs per app, alternating,
BENCH_SERVE_CONNECTIONS (64), BENCH_SERVE_TENANTS (1000), BENCH_WARMUP_SECONDS (2) of hello-world
warm-up (/status warm-up runs last at least 5 s), BENCH_WARMUP_RUNS (10) /status warm-up runs at most,
BENCH_LOADGEN=python to skip wrk.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from status_service.model import Health, State
from status_service.prober import Prober
from status_service.registry import load as load_registry
from status_service.store import Store, connect

from . import load
from .common import (
    Redis, Row, env_float, env_int, free_port, http_get, log, machine_line, print_table, redis_server, run_main,
    service_env, spawn, stop, tail, wait_until, workdir, write_config,
)

SECONDS = env_float("BENCH_SERVE_SECONDS", 10)
CONNECTIONS = env_int("BENCH_SERVE_CONNECTIONS", 64)
TENANTS = env_int("BENCH_SERVE_TENANTS", 1000)
WARMUP_S = env_float("BENCH_WARMUP_SECONDS", 2)
ROUNDS = env_int("BENCH_SERVE_ROUNDS", 2)  # load runs per app, alternating hello-world and /status
WARMUP_RUNS = env_int("BENCH_WARMUP_RUNS", 10)  # bound on the warm-up runs of /status
WARMUP_RUN_S = 5.0  # each /status warm-up run lasts at least this: several passes over 1,000 keys
WORKERS = "2"
MAX_304_BYTES = 400  # a 304's head; any 200 of a report would be far larger
CLOSED_PORT_URL = "http://127.0.0.1:9"  # never probed: the reports are seeded here, no prober runs


def seed(redis: Redis, prefix: str, config: Path) -> None:
    """Write the registry and a report per tenant, as a prober would after one healthy probe of each integration."""
    registry = load_registry(config, os.environ)
    store = Store(connect(redis.url, 10.0), prefix)
    prober = Prober(registry, store)
    now = time.time()
    prober.ensure_seeded(now)
    writes = {  # each tenant's latency_ms is its own (100 + n), so a reply shows whose report it is
        t.id: ("", -1, {  # no known history: incarnation "", version -1
            i.id: (0, State(Health.HEALTHY, now, latency_ms=tenant_latency(n), consecutive_successes=1, fence=1))
            for i in t.integrations
        })
        for n, t in enumerate(registry.tenants)
    }
    prober.sync(writes, now)
    prober.write_reports(now, force=True)
    prober.pool.shutdown(wait=False)
    prober.fetcher.close()


def tenant_latency(n: int) -> int:
    """Return the latency_ms seeded for every integration of tenant number n."""
    return 100 + n


def start_gunicorn(app: str, env: dict[str, str], port: int, log_path: Path):
    """Start gunicorn with the project's config file on 127.0.0.1:port and wait until every worker has booted."""
    command = [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "-b", f"127.0.0.1:{port}", app]
    process = spawn(command, env, log_path)

    def booted() -> bool:
        """Return whether every worker has booted; fail loudly if gunicorn died."""
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn {app} exited with {process.returncode}:\n{tail(log_path)}")
        return log_path.read_text(errors="replace").count("Booting worker") >= int(env["WEB_CONCURRENCY"])

    wait_until(booted, 30, f"gunicorn {app} workers")
    wait_until(lambda: _answers(port), 15, f"gunicorn {app} to answer")
    return process


def _answers(port: int) -> bool:
    """Return whether anything answers HTTP on the port."""
    try:
        http_get(port, "/livez", timeout_s=1)
        return True
    except OSError:
        return False


def verify_status(port: int, keys: list[str], integrations: int) -> None:
    """Fail loudly unless /status answers 200 with each sampled tenant's own seeded, all-healthy report."""
    for n in sorted({0, len(keys) // 2, len(keys) - 1}):
        status, headers, body = http_get(port, "/status", {"Authorization": f"Bearer {keys[n]}"})
        if status != 200:
            raise RuntimeError(f"/status answered {status} for key {n}: {body[:300]!r}")
        if (not headers.get("Content-Type", "").startswith("application/json")
                or headers.get("Cache-Control") != "private, no-cache" or not headers.get("ETag")):
            raise RuntimeError(f"/status headers are wrong: {headers}")
        document = json.loads(body)
        data = document["data"]
        rows = data["integrations"]
        expected_ids = [str(i + 1) for i in range(integrations)]
        if (
            document["status"] != "ok"
            or [r["id"] for r in rows] != expected_ids
            or any(r["status"] != "healthy" or r["latency_ms"] != tenant_latency(n) for r in rows)
            or data["total_integrations_count"] != integrations
            or data["healthy_integrations_count"] != integrations
        ):
            raise RuntimeError(f"/status for key {n} is not that tenant's seeded all-healthy report: {body[:300]!r}")
    status, _, _ = http_get(port, "/status", {"Authorization": "Bearer not-a-registered-key"})
    if status != 401:
        raise RuntimeError(f"/status answered {status} to an unknown key, expected 401")


def verify_hello(port: int) -> None:
    """Fail loudly unless the hello-world app answers {"status": "ok"}."""
    status, _, body = http_get(port, "/status")
    if status != 200 or json.loads(body) != {"status": "ok"}:
        raise RuntimeError(f"hello /status answered {status}: {body[:200]!r}")


def commands(redis: Redis) -> int:
    """Return how many commands Redis has processed so far (this INFO call included)."""
    return int(redis.info("stats")["total_commands_processed"])


def conditional_headers(port: int, key: str) -> dict[str, str]:
    """Return an If-None-Match naming the key's current report; fail loudly unless the server answers it 304."""
    _, headers, _ = http_get(port, "/status", {"Authorization": f"Bearer {key}"})
    held = {"If-None-Match": headers["ETag"]}
    status, _, body = http_get(port, "/status", {"Authorization": f"Bearer {key}", **held})
    if status != 304 or body:
        raise RuntimeError(f"/status with If-None-Match answered {status} with {len(body)} bytes, expected an empty 304")
    return held


def measure(name: str, port: int, keys: list[str], directory: Path, redis: Redis,
            headers: dict[str, str] | None = None) -> tuple[load.LoadResult, int]:
    """Drive one running server for SECONDS and log what the load generator saw; return it and the Redis commands spent."""
    log(f"measuring {name}: {load.tool()} {CONNECTIONS} connections for {SECONDS:.0f}s, {len(keys)} key(s)"
        + (f", {', '.join(headers)}" if headers else ""))
    before = commands(redis)
    r = load.run(port, "/status", keys, SECONDS, CONNECTIONS, directory, headers)
    spent = commands(redis) - before - 1
    log(f"  {r.rps:,.0f} req/s, p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms, 4xx/5xx {r.errors_4xx_5xx}, {r.bytes_per_response:,.0f} B/response, "
        f"socket errors {r.socket_errors}, Redis commands {spent:,} ({spent / max(1, r.requests):.4f} per request)")
    return r, spent


LINK_CHECKS_PER_S = 2  # per worker: a ping on the changes channel and a read of the key registry's generation


def ping_allowance(seconds: float) -> int:
    """Return the Redis commands an idle web tier may spend in `seconds`: each worker's link checks, every second."""
    return int(WORKERS) * LINK_CHECKS_PER_S * (math.ceil(seconds) + 2) + 2


def warm_status(port: int, keys: list[str], directory: Path, redis: Redis) -> tuple[int, int, int]:
    """Load /status until one warm-up run reads Redis for no request; return (runs, requests, commands) of the last one.

    A request served from a worker's memory costs Redis nothing; one that is not costs a pipeline of
    at least two commands. So a run whose commands stay within the workers' link checks shows that every
    worker's subscription is live and that every key it was sent is in its memory. Fails after
    WARMUP_RUNS runs.
    """
    seconds = max(WARMUP_S, WARMUP_RUN_S)
    for run in range(1, WARMUP_RUNS + 1):
        before = commands(redis)
        r = load.run(port, "/status", keys, seconds, CONNECTIONS, directory)
        spent = commands(redis) - before - 1
        log(f"  warm-up {run}: {r.requests:,} requests, {spent:,} Redis commands")
        # Each wrk thread rotates over all keys on its own: 2 x keys requests send every key a few times to each worker.
        if spent <= ping_allowance(r.seconds) and r.requests >= 2 * len(keys):
            return run, r.requests, spent
    raise RuntimeError(f"/status still reads Redis after {WARMUP_RUNS} warm-up runs: is the workers' subscription live?")


def pooled(results: list[load.LoadResult]) -> load.LoadResult:
    """Combine rounds: all requests over all seconds; latencies are the rounds' mean."""
    n = len(results)
    return load.LoadResult(
        tool=results[0].tool,
        requests=sum(r.requests for r in results),
        seconds=sum(r.seconds for r in results),
        p50_ms=sum(r.p50_ms for r in results) / n,
        p99_ms=sum(r.p99_ms for r in results) / n,
        errors_4xx_5xx=sum(r.errors_4xx_5xx for r in results),
        socket_errors=sum(r.socket_errors for r in results),
        bytes_read=sum(r.bytes_read for r in results),
    )


@dataclass
class Scenario:
    """One registry's measurements: /status and hello-world pooled, and Redis's share of /status."""

    status: load.LoadResult
    hello: load.LoadResult
    not_modified: load.LoadResult | None  # /status with If-None-Match, in the one-key scenario
    commands: int  # Redis commands processed during the measured /status runs (without If-None-Match)
    warmup_runs: int
    warmup_requests: int
    warmup_commands: int

    @property
    def per_request(self) -> float:
        """Return Redis commands per measured /status request."""
        return self.commands / max(1, self.status.requests)


def scenario(redis: Redis, directory: Path, name: str, tenants: int, per_tenant: int) -> Scenario:
    """Seed one registry, start both apps, verify and warm them, then alternate their loads.

    With one key, /status is also loaded with If-None-Match naming its report, in the same rotation.
    """
    config = directory / f"{name}.yaml"
    keys = write_config(config, tenants, per_tenant, CLOSED_PORT_URL, {"interval_seconds": 3600})
    prefix = f"bench:{name}:"
    log(f"seeding {tenants} tenant(s) x {per_tenant} integrations")
    seed(redis, prefix, config)
    apps = {
        "hello": ("bench.hello:app", verify_hello),
        "status": ("wsgi:app", lambda port: verify_status(port, keys, per_tenant)),
    }
    ports, processes = {}, []
    results: dict[str, list[load.LoadResult]] = {"hello": [], "status": [], "304": []}
    spent = 0
    try:
        for label, (app, verify) in apps.items():
            ports[label] = free_port()
            env = service_env(redis, prefix, config, PORT=str(ports[label]), WEB_CONCURRENCY=WORKERS)
            processes.append(start_gunicorn(app, env, ports[label], directory / f"{name}-{label}.log"))
            verify(ports[label])
            if label == "status":
                warm = warm_status(ports[label], keys, directory, redis)
            elif WARMUP_S > 0:
                load.run(ports[label], "/status", keys, WARMUP_S, CONNECTIONS, directory)
        held = conditional_headers(ports["status"], keys[0]) if len(keys) == 1 else None
        for _ in range(ROUNDS):  # alternate, so a slow spell of the machine hits both alike
            for label, (app, _verify) in apps.items():
                r, n = measure(app, ports[label], keys, directory, redis)
                results[label].append(r)
                if label == "status":
                    spent += n
            if held:
                r = measure("wsgi:app (304)", ports["status"], keys, directory, redis, held)[0]
                # A 304 is a head of some 200 bytes; the 200 of this report is some 9 KB.
                if r.bytes_per_response > MAX_304_BYTES:
                    raise RuntimeError(f"the If-None-Match run read {r.bytes_per_response:,.0f} bytes a response: not 304s")
                results["304"].append(r)
        if held:
            conditional_headers(ports["status"], keys[0])  # still a 304 after the load: nothing changed the report
    finally:
        for process in processes:
            stop(process)
    not_modified = pooled(results["304"]) if results["304"] else None
    return Scenario(pooled(results["status"]), pooled(results["hello"]), not_modified, spent, *warm)


def main() -> int:
    """Run both serving rows and print the table."""
    with workdir("serve") as directory, redis_server(directory / "redis") as redis:
        machine = machine_line(redis)
        one = scenario(redis, directory, "one", 1, 50)
        many = scenario(redis, directory, "many", TENANTS, 5)
    rows = [
        Row("1 tenant x 50: throughput", one.status.rps, one.hello.rps, ">= 0.85", "req/s"),
        Row("1 tenant x 50: p99 latency", one.status.p99_ms, one.hello.p99_ms, "<= 2.0", "ms"),
        Row("1 tenant x 50, If-None-Match (304): throughput", one.not_modified.rps, one.hello.rps, ">= 0.95", "req/s"),
        Row(f"{TENANTS} tenants x 5, round-robin: throughput", many.status.rps, many.hello.rps, ">= 0.85", "req/s"),
        Row(f"{TENANTS} tenants x 5, round-robin: p99 latency", many.status.p99_ms, many.hello.p99_ms, None, "ms"),
        Row("4xx and 5xx responses (all /status runs)",
            one.status.errors_4xx_5xx + one.not_modified.errors_4xx_5xx + many.status.errors_4xx_5xx, None, "== 0"),
        Row("4xx and 5xx responses (hello-world runs)", one.hello.errors_4xx_5xx + many.hello.errors_4xx_5xx, None, "== 0"),
    ]
    notes = [
        machine,
        f"load: {one.status.tool}, {CONNECTIONS} connections (wrk -t2), {ROUNDS} x {SECONDS:.0f}s per app alternating with its baseline, "
        f"after warm-up; req/s pooled over the runs, p99 their mean",
        f"both apps: gunicorn -c config/gunicorn.conf.py (gthread), WEB_CONCURRENCY={WORKERS}; "
        "baseline = bench/hello.py under the same settings and load",
        f"warm-up of /status: {max(WARMUP_S, WARMUP_RUN_S):.0f}s runs until one costs Redis only the workers' link checks: "
        f"1 tenant {one.warmup_runs} run(s) (last: {one.warmup_requests:,} requests, {one.warmup_commands} commands), "
        f"{TENANTS} tenants {many.warmup_runs} run(s) (last: {many.warmup_requests:,} requests, {many.warmup_commands} commands)",
        f"Redis commands per /status request over the measured runs: 1 tenant {one.per_request:.4f} "
        f"({one.commands:,} for {one.status.requests:,}), {TENANTS} tenants {many.per_request:.4f} "
        f"({many.commands:,} for {many.status.requests:,}); reading Redis costs at least 2 per request",
        f"socket errors (connect/read/write/timeout): status {one.status.socket_errors + many.status.socket_errors}, "
        f"hello {one.hello.socket_errors + many.hello.socket_errors}",
    ]
    print_table("serve: GET /status vs hello-world", rows, notes)
    return 0


if __name__ == "__main__":
    run_main(main)
