"""Outbound HTTP: no state shared between probes, no headers carried elsewhere, proxies read once, one deadline."""
from __future__ import annotations

import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

import pytest

from status_service.fetch import USER_AGENT, Fetcher
from status_service.model import Outcome, ProbeSpec
from tests.conftest import free_port


def test_http_proxy_from_the_environment_is_used(monkeypatch, upstream) -> None:
    upstream.url("http://status.provider.invalid/health")  # a proxy sees the absolute URL as its path
    for name in ("http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", upstream.base)
    outcome = Fetcher().probe(ProbeSpec(url="http://status.provider.invalid/health"))
    assert outcome.ok, outcome
    assert upstream.count("http://status.provider.invalid/health") == 1


def test_no_proxy_hosts_are_reached_directly(monkeypatch, upstream) -> None:
    for name in ("http_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    outcome = Fetcher().probe(ProbeSpec(url=upstream.url("/direct")))
    assert outcome.ok, outcome
    assert upstream.headers["/direct"]["User-Agent"] == USER_AGENT


def test_netrc_credentials_are_never_added(monkeypatch, tmp_path, upstream) -> None:
    (tmp_path / ".netrc").write_text("machine 127.0.0.1 login user password secret\n")
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    assert Fetcher().probe(ProbeSpec(url=upstream.url("/plain"))).ok
    assert "Authorization" not in upstream.headers["/plain"]


def test_a_cookie_one_probe_was_sent_never_reaches_another(upstream) -> None:
    fetcher = Fetcher()
    assert fetcher.probe(ProbeSpec(url=upstream.url("/login", headers={"Set-Cookie": "session=TENANT-A; Path=/"}))).ok
    assert fetcher.probe(ProbeSpec(url=upstream.url("/other"))).ok
    assert "Cookie" not in upstream.headers["/other"]


def test_redirects_are_not_followed_so_headers_stay_with_their_host(upstream) -> None:
    target = upstream.url("/elsewhere")
    spec = ProbeSpec(url=upstream.url("/moved", status=302, headers={"Location": target}), headers=(("X-Api-Key", "k"),))
    outcome = Fetcher().probe(spec)
    assert (outcome.ok, outcome.reason) == (False, "http_302")
    assert upstream.count("/elsewhere") == 0


# -- one deadline per probe -------------------------------------------------------------------------

TIMEOUT_S = 1.0
MARGIN_S = 0.5  # how long past its deadline a probe may take to return


class RawServer:
    """A TCP server on 127.0.0.1 that reads each request and then hands the connection to `serve`."""

    def __init__(self, serve: Callable[[socket.socket], None]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.base = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.serve = serve
        self.hits: dict[str, int] = {}
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        with conn:
            try:
                request = conn.recv(65536)
                path = request.split(b" ")[1].decode() if request.count(b" ") >= 2 else ""
                with self.lock:
                    self.hits[path] = self.hits.get(path, 0) + 1
                self.serve(conn)
            except OSError:  # the client hung up, as a deadline makes it do
                pass

    def count(self, path: str) -> int:
        """Return how many requests for `path` arrived."""
        with self.lock:
            return self.hits.get(path, 0)

    def close(self) -> None:
        """Stop accepting; connections already open run on until their client hangs up."""
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept on Linux
        self.listener.close()


def never_answers(conn: socket.socket) -> None:
    """Accept the request and say nothing."""
    conn.recv(1)  # returns once the client hangs up


def drips_headers(conn: socket.socket) -> None:
    """Send a status line, then one header byte every 0.3 s for as long as the client listens."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    while True:
        time.sleep(0.3)
        conn.sendall(b"a")


def drips_body(conn: socket.socket) -> None:
    """Send the headers at once, then one body byte every 0.3 s."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    for _ in range(1000):
        time.sleep(0.3)
        conn.sendall(b"a")


def bottomless(pause_s: float, chunk: bytes) -> Callable[[socket.socket], None]:
    """Return a server that sends `chunk` every `pause_s`, in a chunked body that never ends."""
    def serve(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while True:
            conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            time.sleep(pause_s)
    return serve


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[socket.socket], None]], RawServer]]:
    """Build raw servers and close them afterwards."""
    made: list[RawServer] = []

    def build(serve: Callable[[socket.socket], None]) -> RawServer:
        made.append(RawServer(serve))
        return made[-1]

    yield build
    for server in made:
        server.close()


def timed_probe(fetcher: Fetcher, spec: ProbeSpec) -> tuple[Outcome, float]:
    """Probe once; return the outcome and how long probe() took."""
    started = time.monotonic()
    outcome = fetcher.probe(spec)
    return outcome, time.monotonic() - started


@pytest.mark.parametrize("serve", [never_answers, drips_headers, drips_body, bottomless(0.05, b"x" * 16)],
                         ids=["never-answers", "drips-headers", "drips-body", "slow-bottomless-body"])
def test_a_hostile_upstream_is_cut_off_at_the_deadline(raw_server, serve) -> None:
    server = raw_server(serve)
    outcome, took = timed_probe(Fetcher(), ProbeSpec(url=server.base + "/h", timeout_s=TIMEOUT_S))
    assert outcome.reason == "timeout", outcome
    assert took < TIMEOUT_S + MARGIN_S


def test_a_tls_handshake_that_never_completes_is_cut_off_at_the_deadline() -> None:
    listener = socket.create_server(("127.0.0.1", 0))

    def swallow() -> None:  # takes the ClientHello, never sends a ServerHello
        conn, _ = listener.accept()
        with conn:
            while conn.recv(65536):
                pass

    threading.Thread(target=swallow, daemon=True).start()
    url = f"https://127.0.0.1:{listener.getsockname()[1]}/h"
    try:
        outcome, took = timed_probe(Fetcher(), ProbeSpec(url=url, timeout_s=TIMEOUT_S))
    finally:
        listener.close()
    assert outcome.reason == "timeout", outcome
    assert took < TIMEOUT_S + MARGIN_S


def test_a_fast_bottomless_body_is_too_large(raw_server) -> None:
    server = raw_server(bottomless(0, b"x" * 65536))
    outcome, took = timed_probe(Fetcher(), ProbeSpec(url=server.base + "/h", timeout_s=5, max_body_bytes=1_000_000))
    assert outcome.reason == "body_too_large", outcome
    assert took < 5


def test_a_reused_pooled_connection_is_cut_off_at_the_deadline_too(upstream) -> None:
    fetcher = Fetcher()
    assert fetcher.probe(ProbeSpec(url=upstream.url("/ok"))).ok  # leaves a kept-alive connection in the pool
    outcome, took = timed_probe(fetcher, ProbeSpec(url=upstream.url("/slow", header_drip_s=0.3), timeout_s=TIMEOUT_S))
    assert upstream.count("/slow") == 1
    assert outcome.reason == "timeout", outcome
    assert took < TIMEOUT_S + MARGIN_S


@pytest.mark.parametrize("route", [{"header_drip_s": 0.3}, {"drip_s": 0.3}], ids=["in-headers", "in-body"])
def test_after_a_timeout_the_same_fetcher_probes_a_healthy_upstream(upstream, route) -> None:
    fetcher = Fetcher(pool_size=1)  # one pooled connection: a broken one would be handed out again
    assert fetcher.probe(ProbeSpec(url=upstream.url("/ok"))).ok
    outcome, took = timed_probe(fetcher, ProbeSpec(url=upstream.url("/slow", **route), timeout_s=TIMEOUT_S))
    assert (outcome.reason, took < TIMEOUT_S + MARGIN_S) == ("timeout", True), (outcome, took)
    for _ in range(3):
        outcome = fetcher.probe(ProbeSpec(url=upstream.url("/ok")))
        assert outcome.ok, outcome
    assert upstream.count("/ok") == 4


def test_a_hanging_resolver_frees_the_probe_at_its_deadline(upstream) -> None:
    def hanging(*args: Any) -> Any:  # stands in for a getaddrinfo stuck on an unanswering DNS server
        time.sleep(3)
        return socket.getaddrinfo(*args)

    fetcher = Fetcher(resolve=hanging)
    port = upstream.base.rsplit(":", 1)[1]
    outcome, took = timed_probe(fetcher, ProbeSpec(url=f"http://status.provider.test:{port}/h", timeout_s=0.5))
    assert outcome.reason == "timeout", outcome
    assert took < 0.5 + MARGIN_S


def test_a_name_whose_lookups_hang_holds_one_resolver_thread_not_the_others(upstream) -> None:
    calls: list[str] = []

    def resolve(host: str, *args: Any) -> Any:  # one name's DNS server never answers
        calls.append(host)
        if host == "stuck.provider.test":
            time.sleep(3)
        return socket.getaddrinfo(host, *args)

    fetcher = Fetcher(pool_size=4, resolve=resolve)
    port = upstream.base.rsplit(":", 1)[1]
    upstream.url("/ok")
    stuck = [threading.Thread(target=fetcher.probe, args=(ProbeSpec(url=f"http://stuck.provider.test:{port}/h", timeout_s=0.3),))
             for _ in range(12)]
    for thread in stuck:
        thread.start()
    for thread in stuck:
        thread.join(1)
    assert calls.count("stuck.provider.test") == 1  # twelve probes shared one lookup
    for url in (f"http://localhost:{port}/ok", f"{upstream.base}/ok"):  # a name, and an address with no lookup
        outcome, took = timed_probe(fetcher, ProbeSpec(url=url, timeout_s=1))
        assert outcome.ok and took < 0.5, (url, outcome)


def test_a_domain_whose_dns_hangs_holds_its_share_of_resolver_threads_not_the_others(upstream) -> None:
    calls: list[str] = []

    def resolve(host: str, *args: Any) -> Any:  # one domain's DNS servers never answer, for any name
        calls.append(host)
        if host.endswith(".tenant-b.test"):
            time.sleep(3)
        return socket.getaddrinfo("127.0.0.1" if host.endswith(".provider.test") else host, *args)

    fetcher = Fetcher(pool_size=4, resolve=resolve)  # 8 resolver threads, 1 per domain
    port = upstream.base.rsplit(":", 1)[1]
    upstream.url("/ok")
    stuck = [threading.Thread(target=fetcher.probe, args=(ProbeSpec(url=f"http://n{i}.tenant-b.test:{port}/h", timeout_s=0.3),))
             for i in range(16)]  # more names than there are threads
    for thread in stuck:
        thread.start()
    for thread in stuck:
        thread.join(1)
    assert sum(host.endswith(".tenant-b.test") for host in calls) == 1  # the rest waited for the domain's one thread
    for i in range(8):  # other domains, and other names, resolve at once
        outcome, took = timed_probe(fetcher, ProbeSpec(url=f"http://s{i}.provider.test:{port}/ok", timeout_s=1))
        assert outcome.ok and took < 0.5, (i, outcome)
    outcome, _ = timed_probe(fetcher, ProbeSpec(url=f"http://late.tenant-b.test:{port}/ok", timeout_s=0.3))
    assert outcome.reason == "timeout"  # its domain is still stuck


def test_concurrent_dripping_probes_all_return_by_their_deadline(raw_server) -> None:
    pool_size = 4
    server = raw_server(drips_headers)
    fetcher = Fetcher(pool_size=pool_size)
    results: list[tuple[Outcome, float]] = []
    threads = [threading.Thread(target=lambda: results.append(timed_probe(fetcher, ProbeSpec(url=server.base + "/h", timeout_s=TIMEOUT_S))))
               for _ in range(pool_size)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT_S + MARGIN_S)
    assert time.monotonic() - started < TIMEOUT_S + MARGIN_S
    assert [outcome.reason for outcome, _ in results] == ["timeout"] * pool_size
    assert server.count("/h") == pool_size


def test_deadlines_hold_while_many_fast_probes_come_and_go(raw_server, upstream) -> None:
    # Fast probes watch and release sockets thousands of times a second; the deadline thread must
    # still wake for each hung probe among them (it is woken only for an earlier deadline).
    server = raw_server(drips_headers)
    fetcher = Fetcher(pool_size=8)
    stop = threading.Event()
    fast: list[Outcome] = []

    def churn() -> None:
        while not stop.is_set():
            fast.append(fetcher.probe(ProbeSpec(url=upstream.url("/ok"), timeout_s=5)))

    churners = [threading.Thread(target=churn) for _ in range(6)]
    for thread in churners:
        thread.start()
    try:
        took = [timed_probe(fetcher, ProbeSpec(url=server.base + "/h", timeout_s=0.3)) for _ in range(8)]
    finally:
        stop.set()
        for thread in churners:
            thread.join(5)
    assert [outcome.reason for outcome, _ in took] == ["timeout"] * 8
    assert max(seconds for _, seconds in took) < 0.3 + MARGIN_S
    assert len(fast) > 100 and all(outcome.ok for outcome in fast)


# -- a custom CA ------------------------------------------------------------------------------------

@dataclass
class TlsUpstream:
    port: int
    ca_file: str
    server_names: list[str | None] = field(default_factory=list)  # SNI of each handshake
    hosts: list[str] = field(default_factory=list)  # Host header of each request


@pytest.fixture
def tls_upstream(tmp_path) -> Iterator[TlsUpstream]:
    """A real HTTPS server on 127.0.0.1 with a self-signed certificate made by openssl."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:status.provider.test"],
        check=True, capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    state = TlsUpstream(port=0, ca_file=str(cert))
    context.sni_callback = lambda sock, name, ctx: state.server_names.append(name)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            state.hosts.append(self.headers["Host"])
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    state.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield state
    server.shutdown()
    server.server_close()


def test_a_ca_bundle_named_in_the_environment_is_trusted(tls_upstream) -> None:
    spec = ProbeSpec(url=f"https://localhost:{tls_upstream.port}/health")
    assert Fetcher(environ={}).probe(spec).reason == "tls_error"
    for variable in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        outcome = Fetcher(environ={variable: tls_upstream.ca_file}).probe(spec)
        assert outcome.ok, (variable, outcome)


def test_tls_and_the_host_header_use_the_host_name_not_the_resolved_address(tls_upstream) -> None:
    def resolve(host: str, *args: Any) -> Any:  # stands in for DNS: the name points at the local server
        assert host == "status.provider.test"
        return socket.getaddrinfo("127.0.0.1", *args)

    fetcher = Fetcher(resolve=resolve, environ={"REQUESTS_CA_BUNDLE": tls_upstream.ca_file})
    outcome = fetcher.probe(ProbeSpec(url=f"https://status.provider.test:{tls_upstream.port}/health"))
    assert outcome.ok, outcome
    assert tls_upstream.server_names == ["status.provider.test"]
    assert tls_upstream.hosts == [f"status.provider.test:{tls_upstream.port}"]
