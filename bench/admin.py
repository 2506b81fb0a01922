"""Benchmark 6: the admin API: registering integrations, and how fast a prober follows a change.

Row 1: BENCH_ADMIN_INTEGRATIONS (10,000) integrations, BENCH_ADMIN_TENANTS (100) tenants made
through the API first, registered with PUT /admin/tenants/T/integrations/I through gunicorn
(config/gunicorn.conf.py, WEB_CONCURRENCY=2) while one prober process runs, by BENCH_ADMIN_CLIENTS
(8) threads with a keep-alive connection each. Value: PUTs/s. Baseline: the same PUTs, same bodies,
same client, to bench/hello.py's PUT route under the same gunicorn settings, run before and after
the service's PUTs and pooled.
Row 2: from the first of those PUTs until the upstream has seen every integration once. Baseline:
a fresh prober on a config file of the same integrations, from its start until it has probed all,
run before and after the service's PUTs too (the mean).
Row 3: Redis holds BENCH_ADMIN_REGISTRY (100,000) admin API integrations (tenants of
BENCH_ADMIN_PER_TENANT, 1,000), made with the service's own app in-process (Flask's test client, no
HTTP) and then made due in an hour, and a prober has loaded them. BENCH_ADMIN_CHANGES (20) times, one new integration is PUT
through gunicorn; the delay is from sending the PUT until the upstream sees its first probe.
Value: the median delay. Baseline: the same with 1 tenant of BENCH_ADMIN_PER_TENANT in Redis.
A last row compares the prober's CPU seconds over the two sides' changes.
The PUTs are spaced so that they fall evenly over the prober's tick (see change_spacing), so the
wait for the next tick weighs the same on both sides.
Other settings: BENCH_ADMIN_LATENCY (0.05 s, the upstream's), BENCH_ADMIN_TICK (1 s, the prober's).
"""
from __future__ import annotations

import http.client
import itertools
import json
import math
import multiprocessing
import os
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

from status_service.model import DEFAULT_MAX_INTEGRATIONS, schedule_member
from status_service.store import Store, connect

from .common import (
    HOST, TYPES, Monitor, Redis, Row, Upstream, env_float, env_int, free_port, integration_path,
    key_digest, log, machine_line, print_table, redis_server, run_main, service_env, start_probers, stop,
    stop_probers, wait_until, workdir, write_config,
)
from .serve import start_gunicorn

INTEGRATIONS = env_int("BENCH_ADMIN_INTEGRATIONS", 10000)
TENANTS = env_int("BENCH_ADMIN_TENANTS", 100)
CLIENTS = env_int("BENCH_ADMIN_CLIENTS", 8)
REGISTRY = env_int("BENCH_ADMIN_REGISTRY", 100000)
PER_TENANT = env_int("BENCH_ADMIN_PER_TENANT", 1000)  # row 3's tenant size, on both sides
CHANGES = env_int("BENCH_ADMIN_CHANGES", 20)
LATENCY_S = env_float("BENCH_ADMIN_LATENCY", 0.05)
TICK_S = env_float("BENCH_ADMIN_TICK", 1.0)
WORKERS = "2"
INTERVAL_S = 3600  # every integration is probed once during a run, never twice
ADMIN_KEY = "bench-admin-key"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"}
WARMUP_CHANGES = 2  # row 3: changes sent and waited for, not counted (each worker's first PUT)
POPULATE_WORKERS = 2  # processes making row 3's registry


# -- HTTP client ----------------------------------------------------------------------------------
class Client:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1:port, opened again when the server closes it."""

    def __init__(self, port: int) -> None:
        """Connect lazily to 127.0.0.1:port."""
        self.port = port
        self.connection: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """Send one request with the admin key; return (status, body). Retried on a fresh connection twice."""
        for attempt in range(3):
            if self.connection is None:
                self.connection = http.client.HTTPConnection(HOST, self.port, timeout=30)
            try:
                self.connection.request(method, path, body=body, headers=AUTH)
                response = self.connection.getresponse()
                data = response.read()
                if response.will_close:
                    self.close()
                return response.status, data
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close the connection, if open."""
        if self.connection is not None:
            self.connection.close()
            self.connection = None


@dataclass
class Sent:
    """What sending a batch of PUTs measured."""

    started: float  # epoch seconds, just before the first PUT
    seconds: float  # until the last answer
    latencies: list[float]  # seconds, in the order of the batch
    statuses: Counter = field(default_factory=Counter)
    web_cpu_s: float = 0.0  # CPU seconds the gunicorn master and workers spent meanwhile
    client_cpu_s: float = 0.0  # ... this process, the client
    other_cpu_s: float = 0.0  # ... and processes this benchmark did not start (the machine is shared)

    @property
    def rate(self) -> float:
        """Return PUTs answered per second."""
        return len(self.latencies) / self.seconds

    def per_put_ms(self, cpu_s: float) -> float:
        """Return CPU milliseconds per PUT."""
        return 1000 * cpu_s / len(self.latencies)


def pooled(runs: list[Sent]) -> Sent:
    """Combine runs of the same PUTs: all PUTs over all seconds, CPU summed."""
    return Sent(
        runs[0].started, sum(r.seconds for r in runs), [x for r in runs for x in r.latencies],
        sum((r.statuses for r in runs), Counter()), sum(r.web_cpu_s for r in runs), sum(r.client_cpu_s for r in runs),
        sum(r.other_cpu_s for r in runs),
    )


def others_cpu_seconds() -> float:
    """Return the CPU seconds the whole machine has been busy so far, minus this process's and its children's."""
    t = psutil.cpu_times()
    busy = t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0) + getattr(t, "steal", 0)
    return busy - cpu_seconds(os.getpid())


def cpu_seconds(pid: int, children: bool = True) -> float:
    """Return the user+system CPU seconds of a process (and its children) so far."""
    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *(root.children(recursive=True) if children else [])]:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def send_all(port: int, puts: list[tuple[str, bytes]], clients: int, web_pid: int) -> Sent:
    """Send every (path, body) PUT over `clients` keep-alive connections at once, in order; web_pid is gunicorn's."""
    latencies = [0.0] * len(puts)
    statuses: Counter = Counter()
    counted = threading.Lock()
    turns = itertools.count()  # next() of a count is atomic in CPython: each PUT is sent once
    failures: list[BaseException] = []

    def worker() -> None:
        """Send the next PUT until none is left."""
        client, mine = Client(port), Counter()
        try:
            for n in turns:
                if n >= len(puts):
                    break
                begun = time.perf_counter()
                status, _ = client.request("PUT", *puts[n])
                latencies[n] = time.perf_counter() - begun
                mine[status] += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            failures.append(exc)
        finally:
            client.close()
            with counted:
                statuses.update(mine)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    web_before, client_before, others_before = cpu_seconds(web_pid), cpu_seconds(os.getpid(), False), others_cpu_seconds()
    started, begun = time.time(), time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - begun
    if failures:
        raise RuntimeError(f"PUT failed: {failures[0]!r}")
    web_cpu_s, client_cpu_s = cpu_seconds(web_pid) - web_before, cpu_seconds(os.getpid(), False) - client_before
    return Sent(started, seconds, latencies, statuses, web_cpu_s, client_cpu_s, others_cpu_seconds() - others_before)


# -- configs and bodies ---------------------------------------------------------------------------
def tenant_name(t: int) -> str:
    """Return the id of benchmark tenant number t (as write_config names them)."""
    return f"tenant{t:05d}"


def probe_of(url: str) -> dict[str, Any]:
    """Return an integration's probe: what write_config gives each integration, and a long interval."""
    return {"url": url, "expect_json": {"status.indicator": "none"}, "interval_seconds": INTERVAL_S}


def put_body(i: int, url: str) -> bytes:
    """Return the JSON body of the PUT of integration number i (its type) probing url."""
    return json.dumps({"type": TYPES[i % len(TYPES)], "probe": probe_of(url)}).encode()


def put_path(t: int, integration_id: str) -> str:
    """Return the admin API path of one integration."""
    return f"/admin/tenants/{tenant_name(t)}/integrations/{integration_id}"


def api_config(path: Path, largest_tenant: int) -> Path:
    """Write a config of no tenants: the admin key, private addresses allowed, room for the largest tenant."""
    document = {
        "probe": {"interval_seconds": INTERVAL_S, "allow_private_addresses": True},
        "prober": {"tick_seconds": TICK_S},
        "admin": {"max_integrations_per_tenant": max(DEFAULT_MAX_INTEGRATIONS, largest_tenant)},
        "admin_keys": [{"id": "bench", "sha256": key_digest(ADMIN_KEY)}],
        "tenants": [],
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def first_probes(upstream: Upstream, paths: list[str], timeout_s: float) -> list[float]:
    """Wait until the upstream has seen every path; return the epoch time of each path's first probe, sorted."""

    def seen_all() -> list[float] | None:
        """Return the first-probe times once every path has a hit."""
        if upstream.total() < len(paths):
            return None
        hits = upstream.stats(hits=True)["hits"]
        if any(not hits.get(p) for p in paths):
            return None
        return sorted(min(hits[p]) for p in paths)

    return wait_until(seen_all, timeout_s, f"the upstream to see all {len(paths):,} integrations", interval_s=0.5)


# -- rows 1 and 2 ---------------------------------------------------------------------------------
def registrations(base_url: str) -> tuple[list[tuple[str, bytes]], list[str]]:
    """Return the PUTs of INTEGRATIONS integrations, interleaved over the tenants, and their upstream paths."""
    per_tenant = INTEGRATIONS // TENANTS
    order = [(t, i) for i in range(per_tenant) for t in range(TENANTS)]  # the tenants grow together
    puts = [(put_path(t, str(i + 1)), put_body(i, base_url + integration_path(t, i))) for t, i in order]
    return puts, [integration_path(t, i) for t, i in order]


def hello_puts(redis: Redis, upstream: Upstream, directory: Path, tag: str) -> Sent:
    """Row 1's baseline, one run: the same PUTs to bench/hello.py under the same gunicorn settings."""
    puts, _ = registrations(upstream.base_url)
    port = free_port()
    env = service_env(redis, "bench:admin:hello:", directory / "unused.yaml", PORT=str(port), WEB_CONCURRENCY=WORKERS)
    web = start_gunicorn("bench.hello:app", env, port, directory / f"{tag}.log")  # a log of its own: its boot is awaited
    try:
        client = Client(port)
        status, _ = client.request("PUT", *puts[0])
        client.close()
        if status != 201:
            raise RuntimeError(f"hello PUT answered {status}")
        sent = send_all(port, puts, CLIENTS, web.pid)
    finally:
        stop(web)
    if set(sent.statuses) != {201}:
        raise RuntimeError(f"hello PUTs answered {dict(sent.statuses)}")
    return sent


def file_prober(redis: Redis, upstream: Upstream, directory: Path, tag: str) -> dict[str, float]:
    """Row 2's baseline, one run: a fresh prober on a config file of the same integrations, from its start until all are probed."""
    config = directory / f"{tag}.yaml"
    write_config(config, TENANTS, INTEGRATIONS // TENANTS, upstream.base_url, {"interval_seconds": INTERVAL_S},
                 {"tick_seconds": TICK_S})
    _, paths = registrations(upstream.base_url)
    upstream.reset()
    started = time.time()
    probers = start_probers(service_env(redis, f"bench:admin:{tag}:", config), 1, directory, tag)
    try:
        firsts = first_probes(upstream, paths, 300)
    finally:
        stop_probers(probers)
    return {"seconds": firsts[-1] - started, "first_probe": firsts[0] - started}


def file_baseline(redis: Redis, upstream: Upstream, directory: Path, tag: str) -> dict[str, float]:
    """Run file_prober once, with progress lines."""
    log(f"file: a fresh prober on {INTEGRATIONS:,} integrations of a config file")
    found = file_prober(redis, upstream, directory, tag)
    log(f"  all probed {found['seconds']:.1f}s after its start")
    return found


def hello_baseline(redis: Redis, upstream: Upstream, directory: Path, tag: str) -> Sent:
    """Run hello_puts once, with progress lines."""
    log(f"hello: {INTEGRATIONS:,} PUTs over {CLIENTS} connections to bench/hello.py")
    sent = hello_puts(redis, upstream, directory, tag)
    log(f"  {sent.rate:,.0f} PUTs/s")
    return sent


def check_status(client: Client, port: int, key: str, expected: int) -> None:
    """Fail loudly unless /status lists `expected` integrations for the key's tenant, all healthy (within 10 s)."""

    def healthy() -> bool:
        """Return whether the tenant's report shows every integration healthy."""
        connection = http.client.HTTPConnection(HOST, port, timeout=10)
        try:
            connection.request("GET", "/status", headers={"Authorization": f"Bearer {key}"})
            response = connection.getresponse()
            data = json.loads(response.read())["data"]
        finally:
            connection.close()
        return data["total_integrations_count"] == expected and data["healthy_integrations_count"] == expected

    wait_until(healthy, 10, f"/status to show {expected} healthy integrations", interval_s=0.2)


def api_registration(redis: Redis, upstream: Upstream, directory: Path) -> dict[str, Any]:
    """Rows 1 and 2: make the tenants, PUT every integration, and wait until the upstream has seen them all."""
    config = api_config(directory / "api.yaml", INTEGRATIONS // TENANTS)
    port = free_port()
    env = service_env(redis, "bench:admin:api:", config, PORT=str(port), WEB_CONCURRENCY=WORKERS)
    puts, paths = registrations(upstream.base_url)
    upstream.reset()
    probers = start_probers(env, 1, directory, "api")
    monitor = Monitor(probers[0][0].pid)
    web = None
    try:
        web = start_gunicorn("wsgi:app", env, port, directory / "api-web.log")
        client = Client(port)

        def make(t: int) -> int:
            """POST tenant number t; return the status."""
            return client.request("POST", "/admin/tenants", json.dumps({"id": tenant_name(t)}).encode())[0]

        # Until the prober has seeded the admin key, the API answers 401.
        wait_until(lambda: make(0) == 201, 30, "the admin API to accept the admin key", interval_s=0.2)
        for t in range(1, TENANTS):
            status = make(t)
            if status not in (201, 409):  # 409: a retried POST that had landed
                raise RuntimeError(f"POST /admin/tenants answered {status}")
        status, body = client.request("POST", f"/admin/tenants/{tenant_name(0)}/keys")
        if status != 201:
            raise RuntimeError(f"POST keys answered {status}: {body[:200]!r}")
        key = json.loads(body)["key"]
        log(f"api: {TENANTS} tenants made; {len(puts):,} PUTs over {CLIENTS} connections, one prober running")
        monitor.mark("start")
        psutil.cpu_percent(None)  # starts the machine-wide CPU measurement
        redis_before = cpu_seconds(redis.process.pid)
        sent = send_all(port, puts, CLIENTS, web.pid)
        busy, redis_cpu_s = psutil.cpu_percent(None), cpu_seconds(redis.process.pid) - redis_before
        monitor.mark("sent")
        log(f"  {sent.rate:,.0f} PUTs/s ({dict(sent.statuses)}); waiting for every first probe")
        firsts = first_probes(upstream, paths, 300)
        monitor.mark("end")
        check_status(client, port, key, INTEGRATIONS // TENANTS)
        client.close()
    finally:
        if web is not None:
            stop(web)
        stop_probers(probers)
        monitor.close()
    if set(sent.statuses) != {201}:
        raise RuntimeError(f"PUTs answered {dict(sent.statuses)}, expected 201 each")
    tenth = max(1, len(sent.latencies) // 10)
    return {
        "sent": sent,
        "seconds": firsts[-1] - sent.started,
        "tail": firsts[-1] - (sent.started + sent.seconds),
        "first_probe": firsts[0] - sent.started,
        "probed_meanwhile": sum(t <= sent.started + sent.seconds for t in firsts),
        "busy": busy,
        "redis_ms": sent.per_put_ms(redis_cpu_s),
        "early_ms": statistics.median(sent.latencies[:tenth]) * 1000,
        "late_ms": statistics.median(sent.latencies[-tenth:]) * 1000,
        "cpu": monitor.cpu_percent("start", "sent"),
        "tail_cpu": monitor.cpu_percent("sent", "end"),
    }


# -- row 3 ----------------------------------------------------------------------------------------
_app = None  # a populate worker process's admin API: the service's Flask app, driven by its test client


def _start_worker(env: dict[str, str]) -> None:
    """Make this worker process's app, configured from the environment as a gunicorn worker is."""
    global _app
    os.environ.update(env)
    from status_service import create_app

    _app = create_app().test_client()


def _register_tenant(t: int, per_tenant: int, base_url: str) -> None:
    """In a worker process: make tenant t and its integrations through the admin API."""
    response = _app.post("/admin/tenants", data=json.dumps({"id": tenant_name(t)}), headers=AUTH)
    if response.status_code != 201:
        raise RuntimeError(f"POST /admin/tenants answered {response.status_code}: {response.get_data()[:300]!r}")
    for i in range(per_tenant):
        body = put_body(i, f"{base_url}/registry{integration_path(t, i)}")  # never probed: due in an hour
        response = _app.put(put_path(t, str(i + 1)), data=body, headers=AUTH)
        if response.status_code != 201:
            raise RuntimeError(f"PUT answered {response.status_code}: {response.get_data()[:300]!r}")


def populate(env: dict[str, str], store: Store, tenants: int, per_tenant: int, base_url: str) -> None:
    """Make tenants x per_tenant integrations through the admin API in-process (no HTTP), then make them due in an hour.

    The service's own app handles every call, in POPULATE_WORKERS processes, a tenant per task;
    Redis must already hold the config file's admin key and settings. No prober runs meanwhile.
    """
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(POPULATE_WORKERS, mp_context=context, initializer=_start_worker,
                               initargs=({**env, "LOG_LEVEL": "WARNING"},))
    try:
        list(pool.map(_register_tenant, range(tenants), [per_tenant] * tenants, [base_url] * tenants))
    finally:
        pool.shutdown(cancel_futures=True)  # stopped early (SIGTERM): only the tenants under way finish
    # The schedule (see status_service/store): member -> due time in ms. A PUT makes its integration due at once.
    due_ms = int((time.time() + INTERVAL_S) * 1000)
    members = [schedule_member(tenant_name(t), str(i + 1)) for t in range(tenants) for i in range(per_tenant)]
    for n in range(0, len(members), 10_000):
        store.client.zadd(store.due_key(), {m: due_ms for m in members[n:n + 10_000]}, xx=True)
    if store.client.zcount(store.due_key(), "-inf", due_ms - 1):
        raise RuntimeError("some integrations are still due before the hour")


def ticked(store: Store, pid: int) -> bool:
    """Return whether prober process `pid` has sent a heartbeat: its first tick, which reads every tenant, is over."""
    return any(f":{pid}:" in member.decode() for member in store.client.zrange(store.probers_key(), 0, -1))  # id host:pid:rand


def seed(env: dict[str, str], store: Store, directory: Path, tag: str) -> None:
    """Run a prober until its first tick has written the config file's admin key and settings to Redis, then stop it."""
    probers = start_probers(env, 1, directory, f"{tag}-seed")
    try:
        wait_until(lambda: ticked(store, probers[0][0].pid), 60, "the seeding prober's first tick", interval_s=0.2)
    finally:
        stop_probers(probers)


def wait_idle(monitor: Monitor, timeout_s: float) -> None:
    """Wait until the prober spends under 5 % of a core for 3 s running."""
    quiet, deadline = 0, time.monotonic() + timeout_s
    monitor.mark("idle")
    while quiet < 3:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the prober was still busy after {timeout_s:.0f}s")
        time.sleep(1)
        before = monitor.marks["idle"][1]
        monitor.mark("idle")
        quiet = quiet + 1 if monitor.marks["idle"][1] - before < 0.05 else 0


def change_spacing(changes: int) -> float:
    """Return the time between two changes' PUTs: more than a tick, and a step of phase that covers the tick evenly.

    With a step of m/changes of a tick (m coprime with changes), the changes' phases relative to the
    prober's tick are 0, 1/changes, 2/changes, ... in some order, whatever the tick's own phase.
    """
    m = next(m for m in range(math.ceil(changes / 2), changes + 1) if math.gcd(m, changes) == 1)
    return TICK_S * (1 + m / changes)


def hit_time(upstream: Upstream, path: str, timeout_s: float) -> float:
    """Wait until the upstream has seen path; return the epoch time of its first hit."""

    def first_hit() -> float | None:
        """Return the first hit on path, if any."""
        times = upstream.stats(hits=True)["hits"].get(path)
        return min(times) if times else None

    return wait_until(first_hit, timeout_s, f"a probe of {path}", interval_s=0.02)


def timed_change(client: Client, upstream: Upstream, t: int, name: str) -> tuple[float, float]:
    """PUT a new integration `name` into tenant t; return (seconds until its first probe, seconds until the answer)."""
    path = f"/change/{name}"
    sent = time.time()
    status, body = client.request("PUT", put_path(t, name), put_body(0, upstream.base_url + path))
    answered = time.time()
    if status != 201:
        raise RuntimeError(f"PUT answered {status}: {body[:300]!r}")
    return hit_time(upstream, path, 30) - sent, answered - sent


def propagation(redis: Redis, upstream: Upstream, directory: Path, tenants: int, tag: str) -> dict[str, Any]:
    """Row 3, one side: tenants x PER_TENANT in Redis, a prober that loaded them, then CHANGES PUTs timed to their first probe."""
    redis.client().flushall()
    prefix = f"bench:admin:{tag}:"
    config = api_config(directory / f"{tag}.yaml", PER_TENANT + CHANGES + WARMUP_CHANGES)
    port = free_port()
    env = service_env(redis, prefix, config, PORT=str(port), WEB_CONCURRENCY=WORKERS)
    store = Store(connect(redis.url, 30.0), prefix)
    seed(env, store, directory, tag)
    log(f"{tag}: making {tenants} tenant(s) x {PER_TENANT:,} integrations through the admin API in-process")
    begun = time.monotonic()
    populate(env, store, tenants, PER_TENANT, upstream.base_url)
    populated_s = time.monotonic() - begun
    log(f"  made in {populated_s:.1f}s; starting the prober and gunicorn")
    upstream.reset()
    begun = time.monotonic()
    probers = start_probers(env, 1, directory, tag)
    monitor = Monitor(probers[0][0].pid)
    web = None
    try:
        web = start_gunicorn("wsgi:app", env, port, directory / f"{tag}-web.log")
        wait_until(lambda: ticked(store, probers[0][0].pid), 300, "the prober's first tick", interval_s=0.2)
        wait_idle(monitor, 120)
        loaded_s = time.monotonic() - begun
        spacing = change_spacing(CHANGES)
        log(f"  prober loaded and idle after {loaded_s:.1f}s; {CHANGES} changes, one every {spacing:.2f}s")
        client = Client(port)
        for n in range(WARMUP_CHANGES):
            timed_change(client, upstream, n % tenants, f"{tag}-warm{n}")
        delays, puts, late = [], [], 0
        monitor.mark("start")
        first_slot = time.monotonic()
        for n in range(CHANGES):
            wait_s = first_slot + n * spacing - time.monotonic()
            late += wait_s < -0.05  # the previous change took longer than its slot
            time.sleep(max(0.0, wait_s))
            delay, put_s = timed_change(client, upstream, n % tenants, f"{tag}-{n:03d}")
            delays.append(delay)
            puts.append(put_s)
        monitor.mark("end")
        client.close()
        stray = upstream.total() - CHANGES - WARMUP_CHANGES
    finally:
        if web is not None:
            stop(web)
        stop_probers(probers)
        monitor.close()
    cpu_s = monitor.marks["end"][1] - monitor.marks["start"][1]
    wall_s = monitor.marks["end"][0] - monitor.marks["start"][0]
    result = {
        "median": statistics.median(delays), "max": max(delays), "min": min(delays),
        "p90": statistics.quantiles(delays, n=10, method="inclusive")[-1] if len(delays) > 1 else delays[0],
        "put_ms": statistics.median(puts) * 1000, "cpu_s": cpu_s, "wall_s": wall_s,
        "populated_s": populated_s, "loaded_s": loaded_s, "rss": monitor.peak_rss, "stray": stray, "late": late,
    }
    log(f"  delay median {result['median'] * 1000:.0f} ms (min {result['min'] * 1000:.0f}, max {result['max'] * 1000:.0f}), "
        f"PUT {result['put_ms']:.1f} ms, prober CPU {cpu_s:.2f}s over {wall_s:.0f}s")
    return result


def main() -> int:
    """Rows 1 and 2 between their baselines, then row 3's two sides; print the table."""
    big_tenants = max(1, REGISTRY // PER_TENANT)
    with workdir("admin") as directory, redis_server(directory / "redis") as redis:
        machine = machine_line(redis)
        upstream = Upstream(LATENCY_S, directory / "upstream.log")
        try:
            # Both baselines run before and after the service's PUTs: this machine slows down after a
            # minute or so of full load, and the service's run sits between the two.
            files, hellos = [file_baseline(redis, upstream, directory, "file0")], [hello_baseline(redis, upstream, directory, "hello0")]
            api = api_registration(redis, upstream, directory)
            log(f"  all probed {api['seconds']:.1f}s after the first PUT")
            hellos.append(hello_baseline(redis, upstream, directory, "hello1"))
            files.append(file_baseline(redis, upstream, directory, "file1"))
            hello = pooled(hellos)
            file = {k: statistics.mean(f[k] for f in files) for k in files[0]}
            small = propagation(redis, upstream, directory, 1, "small")
            big = propagation(redis, upstream, directory, big_tenants, "big")
        finally:
            upstream.close()
    ms = 1000
    registry = big_tenants * PER_TENANT
    rows = [
        Row(f"PUT /admin/.../integrations/I, {INTEGRATIONS:,} over {CLIENTS} connections", api["sent"].rate, hello.rate,
            ">= 0.15", "PUTs/s"),
        Row(f"first PUT until all {INTEGRATIONS:,} probed", api["seconds"], file["seconds"], "<= 2.0", "s"),
        Row(f"one change until probed, {registry:,} in Redis (median of {CHANGES})", big["median"] * ms,
            small["median"] * ms, "<= 1.5", "ms"),
        Row(f"  prober CPU during the {CHANGES} changes", big["cpu_s"], small["cpu_s"], "<= 1.5", "s"),
    ]
    notes = [
        machine,
        f"row 1: {TENANTS} tenants made through the API first, then PUTs interleaved over the tenants (each grows 0 -> "
        f"{INTEGRATIONS // TENANTS}), {CLIENTS} threads with an http.client connection each; gunicorn -c "
        f"config/gunicorn.conf.py, WEB_CONCURRENCY={WORKERS}, one prober probing them meanwhile; baseline: bench/hello.py's "
        f"PUT route (parses the JSON body), same settings, no prober, run before and after ("
        + ", ".join(f"{h.rate:,.0f}" for h in hellos) + f" PUTs/s), pooled; machine CPU {api['busy']:.0f}% during the PUTs; processes this benchmark did not start used "
        f"{100 * api['sent'].other_cpu_s / api['sent'].seconds:.0f}% of a core meanwhile "
        f"({100 * hello.other_cpu_s / hello.seconds:.0f}% during hello's)",
        f"row 1: CPU per PUT: gunicorn {api['sent'].per_put_ms(api['sent'].web_cpu_s):.2f} ms (hello "
        f"{hello.per_put_ms(hello.web_cpu_s):.2f} ms), the client {api['sent'].per_put_ms(api['sent'].client_cpu_s):.2f} ms "
        f"({hello.per_put_ms(hello.client_cpu_s):.2f} ms), Redis {api['redis_ms']:.2f} ms; median PUT latency "
        f"{api['early_ms']:.1f} ms over the first tenth, {api['late_ms']:.1f} ms over the last "
        f"(hello {statistics.median(hello.latencies) * ms:.1f} ms)",
        f"row 2: first probe {api['first_probe']:.2f}s after the first PUT; when the last PUT was answered "
        f"({api['sent'].seconds:.1f}s) the upstream had seen {api['probed_meanwhile']:,} of {INTEGRATIONS:,}, the last "
        f"{api['tail']:.1f}s later; prober CPU {api['cpu']:.0f}% of a core during the PUTs, {api['tail_cpu']:.0f}% after",
        f"row 2 baseline: {TENANTS} tenants x {INTEGRATIONS // TENANTS} in a config file, timed from spawning the prober, "
        f"run before and after (" + ", ".join(f"{f['seconds']:.1f}" for f in files) + " s), mean; first probe after "
        f"{file['first_probe']:.2f}s; upstream latency {LATENCY_S * ms:.0f} ms, prober concurrency 64, "
        f"tick {TICK_S:g}s, interval {INTERVAL_S}s on both sides",
        f"row 3: {big_tenants} tenant(s) x {PER_TENANT:,} vs 1 x {PER_TENANT:,}, made through the app in-process in "
        f"{big['populated_s']:.0f}s vs {small['populated_s']:.1f}s, due in an hour; the prober loaded them and went idle "
        f"{big['loaded_s']:.1f}s vs {small['loaded_s']:.1f}s after its spawn (peak RSS {big['rss'] / 2**20:.0f} vs "
        f"{small['rss'] / 2**20:.0f} MiB)",
        f"row 3: delay from sending the PUT to the upstream's first hit; {CHANGES} PUTs {change_spacing(CHANGES):.2f}s apart "
        f"(evenly over the {TICK_S:g}s tick), after {WARMUP_CHANGES} warm-up ones; min/p90/max "
        f"{big['min'] * ms:.0f}/{big['p90'] * ms:.0f}/{big['max'] * ms:.0f} ms vs "
        f"{small['min'] * ms:.0f}/{small['p90'] * ms:.0f}/{small['max'] * ms:.0f} ms; median PUT answered in "
        f"{big['put_ms']:.1f} vs {small['put_ms']:.1f} ms; other probes {big['stray']} vs {small['stray']}; changes sent "
        f"late (the previous one not yet probed) {big['late']} vs {small['late']}",
        f"row 3 CPU: the prober's user+system seconds over the {big['wall_s']:.0f}s vs {small['wall_s']:.0f}s of changes",
        "targets: row 1 >= 0.15, as a PUT costs 3-4 x the hello route's CPU (key lookup, validation, encryption, 6 Redis "
        "round trips) and the prober probes what is registered meanwhile; row 2 <= 2.0, registering through the API "
        "taking at most as long again as probing from a file; row 3 <= 1.5, a change costing the same at any registry size",
        "GET /status against hello-world is measured by `bash bench/run.sh serve`",
    ]
    print_table("admin API: registering and propagating integrations", rows, notes)
    return 0


if __name__ == "__main__":
    run_main(main)
