"""Shared parts of the benchmarks: settings, temp folders, Redis, processes, configs and the result table."""
from __future__ import annotations

import contextlib
import hashlib
import json
import operator
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import psutil
import yaml
from cryptography.fernet import Fernet

from status_service import embedded
from status_service.store import connect

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "var" / "bench"  # git-ignored; every run's files live (and die) here
HOST = "127.0.0.1"  # the only address any benchmark talks to
BENCH_SECRET_KEY = Fernet.generate_key().decode()  # this run's key for stored credentials


def env_float(name: str, default: float) -> float:
    """Return a float setting from the environment, or the default."""
    raw = os.environ.get(name, "")
    return float(raw) if raw.strip() else default


def env_int(name: str, default: int) -> int:
    """Return an integer setting from the environment, or the default."""
    raw = os.environ.get(name, "")
    return int(raw) if raw.strip() else default


def log(message: str) -> None:
    """Print a progress line (to stderr, so the tables stay clean on stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def workdir(name: str) -> Iterator[Path]:
    """Yield a fresh temp folder under var/bench/, removed afterwards."""
    WORK.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=WORK))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.05) -> Any:
    """Poll until predicate returns something truthy; raise RuntimeError naming `what` on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise RuntimeError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def http_get(port: int, path: str, headers: dict[str, str] | None = None, timeout_s: float = 2.0) -> tuple[int, dict[str, str], bytes]:
    """GET a path on 127.0.0.1:port; return (status, headers, body), errors included."""
    request = urllib.request.Request(f"http://{HOST}:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def answers_http(port: int, path: str) -> bool:
    """Return whether 127.0.0.1:port answers 200 on path."""
    try:
        return http_get(port, path, timeout_s=1.0)[0] == 200
    except OSError:
        return False


# -- Redis --------------------------------------------------------------------------------------
@dataclass
class Redis:
    """A private embedded Redis server for one benchmark."""

    url: str
    process: subprocess.Popen

    def client(self):
        """Return a redis-py client with a generous timeout for big reads."""
        return connect(self.url, timeout_s=10.0)

    def info(self, section: str) -> dict[str, Any]:
        """Return one INFO section."""
        return self.client().info(section)


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[Redis]:
    """Start the project's embedded Redis in `directory` and terminate it afterwards."""
    process = embedded.start(directory)
    try:
        yield Redis(f"unix://{embedded.socket_path(directory)}", process)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


# -- processes ----------------------------------------------------------------------------------
def spawn(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """Start a process from the repo root with its output appended to log_path."""
    with open(log_path, "ab") as out:
        return subprocess.Popen(command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen, timeout_s: float = 20.0) -> None:
    """SIGTERM one process we started, then SIGKILL it if it has not exited within timeout_s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def service_env(redis: Redis, prefix: str, config: Path, **extra: str) -> dict[str, str]:
    """Return the environment of a service process: this run's Redis, prefix and config."""
    env = dict(os.environ)
    env.pop("STATUS_DATA_DIR", None)
    env.update(REDIS_URL=redis.url, STATUS_KEY_PREFIX=prefix, STATUS_CONFIG=str(config), PYTHONPATH=str(REPO),
               STATUS_SECRET_KEY=BENCH_SECRET_KEY, **extra)
    return env


def tail(path: Path, lines: int = 20) -> str:
    """Return the last lines of a log file, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_for_log(path: Path, text: str, process: subprocess.Popen, timeout_s: float) -> None:
    """Wait until a process's log contains text; fail loudly if the process died first."""

    def seen() -> bool:
        """Return whether the text is in the log; fail loudly if the process died."""
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}:\n{tail(path)}")
        try:
            return text in path.read_text(errors="replace")
        except OSError:
            return False

    wait_until(seen, timeout_s, f"'{text}' in {path.name}", interval_s=0.2)


class Monitor:
    """Samples a process's CPU time and RSS in a background thread (bounded by the process's life)."""

    def __init__(self, pid: int, every_s: float = 0.5) -> None:
        """Start sampling process `pid` every every_s seconds."""
        self.process = psutil.Process(pid)
        self.every_s = every_s
        self.peak_rss = 0
        self.marks: dict[str, tuple[float, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        """Record the peak RSS until stopped or the process is gone."""
        while not self._stop.is_set():
            try:
                self.peak_rss = max(self.peak_rss, self.process.memory_info().rss)
            except psutil.Error:
                return
            self._stop.wait(self.every_s)

    def mark(self, name: str) -> None:
        """Remember (wall clock, CPU seconds used so far) under a name."""
        times = self.process.cpu_times()
        self.marks[name] = (time.monotonic(), times.user + times.system)

    def cpu_percent(self, start: str, end: str) -> float:
        """Return the average CPU% (100 = one core) between two marks."""
        (t0, c0), (t1, c1) = self.marks[start], self.marks[end]
        return 100.0 * (c1 - c0) / (t1 - t0)

    def close(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join(2)


# -- configs ------------------------------------------------------------------------------------
def key_digest(key: str) -> str:
    """Return the SHA-256 hex digest under which the config registers a key."""
    return hashlib.sha256(key.encode()).hexdigest()


def plain_key(tenant: int) -> str:
    """Return the plain API key of benchmark tenant number `tenant`."""
    return f"bench-key-{tenant:05d}"


def integration_path(tenant: int, integration: int) -> str:
    """Return the upstream path probed for one integration (distinct per integration)."""
    return f"/t{tenant:05d}/i{integration:03d}"


TYPES = ("MJ", "DALL-E", "Runway", "Ideogram")


def write_config(
    path: Path,
    tenants: int,
    per_tenant: int,
    base_url: str,
    probe: dict[str, Any],
    prober: dict[str, Any] | None = None,
    provider: str = "",
    **sections: Any,
) -> list[str]:
    """Write a config of tenants x per_tenant integrations probing base_url (and any other top-level sections); return the plain keys.

    With `provider`, each integration is that provider's built-in check (a key of its own) against base_url instead.
    """
    document: dict[str, Any] = {"probe": probe, **sections, "tenants": []}
    if prober:
        document["prober"] = prober
    for t in range(tenants):
        document["tenants"].append(
            {
                "id": f"tenant{t:05d}",
                "api_keys": [{"sha256": key_digest(plain_key(t))}],
                "integrations": [
                    {
                        "id": str(i + 1),
                        "type": TYPES[i % len(TYPES)],
                        **({"check": {"provider": provider, "credentials": {"api_key": f"bench-{t}-{i}"}}} if provider else
                           {"probe": {"url": base_url + integration_path(t, i), "expect_json": {"status.indicator": "none"}}}),
                    }
                    for i in range(per_tenant)
                ],
            }
        )
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return [plain_key(t) for t in range(tenants)]


# -- the local upstream -------------------------------------------------------------------------
class Upstream:
    """bench/upstream.py run as its own process on 127.0.0.1, with its hit counters."""

    def __init__(self, latency_s: float, log_path: Path) -> None:
        """Start the upstream on a free port and wait until it answers."""
        self.port = free_port()
        self.latency_s = latency_s
        command = [sys.executable, "-m", "bench.upstream", "--port", str(self.port), "--latency", str(latency_s)]
        self.process = spawn(command, dict(os.environ, PYTHONPATH=str(REPO)), log_path)
        self.log_path = log_path
        wait_until(lambda: answers_http(self.port, "/_stats"), 15, "the upstream to listen")

    @property
    def base_url(self) -> str:
        """Return the URL prefix of every probed path."""
        return f"http://{HOST}:{self.port}"

    def stats(self, hits: bool = False) -> dict[str, Any]:
        """Return the upstream's counters; with hits=True, every path's hit timestamps too."""
        status, _, body = http_get(self.port, "/_stats?hits=1" if hits else "/_stats", timeout_s=30)
        if status != 200:
            raise RuntimeError(f"upstream /_stats answered {status}")
        return json.loads(body)

    def total(self) -> int:
        """Return how many requests the upstream has answered since the last reset."""
        return int(self.stats()["total"])

    def reset(self) -> None:
        """Forget every counted hit."""
        http_get(self.port, "/_reset")

    def close(self) -> None:
        """Stop the upstream process."""
        stop(self.process, 5)


def rate_over_window(count: Callable[[], int], warmup_s: float, window_s: float) -> tuple[float, int, float]:
    """Sleep warmup_s, then count the hits of the next window_s; return (hits/s, hits, machine CPU busy %)."""
    time.sleep(warmup_s)
    n0, t0 = count(), time.monotonic()
    psutil.cpu_percent(None)  # starts the machine-wide CPU measurement
    time.sleep(window_s)
    n1, t1 = count(), time.monotonic()
    return (n1 - n0) / (t1 - t0), n1 - n0, psutil.cpu_percent(None)


# -- reporting ----------------------------------------------------------------------------------
_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}


@dataclass
class Row:
    """One line of a result table; `target` is like ">= 0.85" and applies to the ratio (or to the value without a baseline)."""

    name: str
    value: float | int | str
    baseline: float | int | str | None = None
    target: str | None = None
    unit: str = ""

    @property
    def ratio(self) -> float | None:
        """Return value / baseline when both are numbers."""
        if isinstance(self.value, (int, float)) and isinstance(self.baseline, (int, float)) and self.baseline:
            return self.value / self.baseline
        return None

    @property
    def verdict(self) -> str:
        """Return met, missed, or - when the row has no target."""
        if not self.target:
            return "-"
        op, threshold = self.target.split()
        subject = self.ratio if self.ratio is not None else self.value
        return "met" if _OPS[op](subject, float(threshold)) else "missed"


def _fmt(value: Any, unit: str = "") -> str:
    """Format a number compactly, with its unit."""
    if value is None:
        return "-"
    if isinstance(value, float):
        text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return f"{text} {unit}".strip()


def print_table(title: str, rows: list[Row], notes: list[str] = ()) -> None:
    """Print a result table (row, value, baseline, ratio, target, met/missed) and its notes."""
    header = ("row", "value", "baseline", "ratio", "target", "result")
    cells = [header] + [
        (r.name, _fmt(r.value, r.unit), _fmt(r.baseline, r.unit), _fmt(r.ratio), r.target or "-", r.verdict) for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n== {title}")
    for n, row in enumerate(cells):
        print("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))))
        if n == 0:
            print("  ".join("-" * w for w in widths))
    for note in notes:
        print(f"  note: {note}")
    sys.stdout.flush()


def machine_line(redis: Redis) -> str:
    """Return cores, Python and Redis versions, for the top of each table."""
    version = redis.info("server")["redis_version"]
    return f"{os.cpu_count()} cores, Python {platform.python_version()}, Redis {version}"


# -- prober processes ---------------------------------------------------------------------------
def start_probers(env: dict[str, str], count: int, directory: Path, tag: str, timeout_s: float = 180) -> list[tuple[subprocess.Popen, Path]]:
    """Start `count` real prober processes and wait until each has loaded its config and started."""
    probers = []
    for n in range(count):
        log_path = directory / f"prober-{tag}-{n}.log"
        probers.append((spawn([sys.executable, "-m", "status_service.prober"], env, log_path), log_path))
    try:
        for process, log_path in probers:
            wait_for_log(log_path, "prober.started", process, timeout_s)
    except BaseException:
        stop_probers(probers)
        raise
    return probers


def stop_probers(probers: list[tuple[subprocess.Popen, Path]]) -> None:
    """SIGTERM every prober at once, then wait for each (SIGKILL after 20 s)."""
    for process, _ in probers:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process, _ in probers:
        stop(process)


def steady_prober_rate(env: dict[str, str], upstream: Upstream, directory: Path, tag: str, warmup_s: float, window_s: float) -> dict:
    """Run one real prober process; return its steady probes/s at the upstream, hits, machine busy share and CPU."""
    upstream.reset()
    probers = start_probers(env, 1, directory, tag)
    monitor = Monitor(probers[0][0].pid)
    try:
        wait_until(upstream.total, 30, "the prober's first probe")
        time.sleep(warmup_s)
        monitor.mark("start")
        rate, hits, busy = rate_over_window(upstream.total, 0, window_s)
        monitor.mark("end")
    finally:
        stop_probers(probers)
        monitor.close()
    return {"rate": rate, "hits": hits, "busy": busy, "cpu": monitor.cpu_percent("start", "end")}


def run_main(main: Callable[..., int], *args: Any) -> None:
    """Run a benchmark's main so that SIGTERM (from run.sh's timeout) still stops every child it started."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    sys.exit(main(*args))
