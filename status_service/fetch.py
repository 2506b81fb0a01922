"""The only outbound HTTP: one pooled session, one hard deadline per probe, a size cap."""
from __future__ import annotations

import heapq
import ipaddress
import itertools
import logging
import os
import socket
import threading
import time
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import requests
import urllib3.exceptions as u3
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import default_headers
from urllib3 import connection, connectionpool, poolmanager
from urllib3.util.connection import allowed_gai_family

from . import checks, policy
from .model import Outcome, ProbeSpec

log = logging.getLogger("status_service.fetch")

READ_SIZE = 65536
RESOLVER_THREADS_PER_WORKER = 2
USER_AGENT = "status-service-prober/1"

Resolve = Callable[..., list[tuple[Any, ...]]]  # socket.getaddrinfo's signature


class Watch:
    """A probe's claim on one socket: shut it down if the probe is still using it at its deadline."""

    def __init__(self, sock: socket.socket) -> None:
        # A duplicate descriptor: the connection may close or TLS-wrap (detach) its socket object at
        # any time, while shutdown through the duplicate still reaches the same connection.
        self.dup = socket.fromfd(sock.fileno(), sock.family, sock.type)
        self.active = True
        self.fired = False


class Reaper:
    """One thread per Fetcher that shuts down the sockets of probes past their deadline."""

    def __init__(self) -> None:
        # A plain lock and an event rather than a Condition: watch and cancel run twice per probe,
        # and a Condition's Python-level enter and exit were a visible share of a busy prober's CPU.
        self.lock = threading.Lock()
        self.wakeup = threading.Event()
        self.heap: list[tuple[float, int, Watch]] = []
        self.order = itertools.count()  # breaks ties between equal deadlines
        self.wake_at = float("inf")  # when the thread next looks at the heap by itself
        self.closed = False
        threading.Thread(target=self._run, name="probe-deadlines", daemon=True).start()

    def watch(self, sock: socket.socket, deadline: float) -> Watch:
        """Shut `sock` down at `deadline` (monotonic) unless cancelled first."""
        watch = Watch(sock)
        with self.lock:
            heapq.heappush(self.heap, (deadline, next(self.order), watch))
            # Woken only for a deadline earlier than it would look anyway: probes share a timeout,
            # so a new deadline is nearly always later, and a probe costs the thread no wake-up.
            if deadline < self.wake_at:
                self.wake_at = deadline
                self.wakeup.set()
        return watch

    def cancel(self, watch: Watch) -> None:
        """Stop watching; under the lock, so a socket is never shut down after it was handed on."""
        if not watch.active:  # only ever goes from true to false, so reading it unlocked is safe
            return
        with self.lock:
            if watch.active:
                watch.active = False
                watch.dup.close()
            self._drop_finished()

    def close(self) -> None:
        """Stop the thread."""
        self.closed = True
        self.wakeup.set()

    def _drop_finished(self) -> None:
        # Finished probes leave the top of the heap at once, so the thread sleeps until the oldest
        # running probe's deadline rather than waking at each finished one's.
        while self.heap and not self.heap[0][2].active:
            heapq.heappop(self.heap)

    def _run(self) -> None:
        while not self.closed:
            with self.lock:
                self.wakeup.clear()  # under the lock: a watch that sets it after this is not missed
                now = time.monotonic()
                while self.heap and self.heap[0][0] <= now:
                    watch = heapq.heappop(self.heap)[2]
                    if watch.active:
                        watch.active, watch.fired = False, True
                        try:
                            # Unblocks the probe's recv or send at once; the connection is then dead,
                            # so urllib3 never hands it out again.
                            watch.dup.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass  # the connection is already gone
                        watch.dup.close()
                self._drop_finished()
                # Decided under the lock: a cancel may empty the heap the moment it is released, and
                # the thread must still wake at the time watch() compares new deadlines with.
                self.wake_at = self.heap[0][0] if self.heap else float("inf")
                timeout = self.wake_at - now if self.heap else None
            self.wakeup.wait(timeout)


class Deadline:
    """The one deadline of a running probe, which its thread's connections obey.

    A guarded probe's direct connections also obey the address policy: only public addresses.
    """

    def __init__(self, fetcher: Fetcher, at: float, guarded: bool = False) -> None:
        self.fetcher = fetcher
        self.at = at
        self.watches: list[Watch] = []
        self.guarded = guarded
        self.refused = False  # whether the address policy refused where the probe would connect

    def remaining(self) -> float:
        """Return the seconds left (negative once passed)."""
        return self.at - time.monotonic()

    def passed(self) -> bool:
        """Return whether the deadline has passed (or cut off one of the probe's sockets)."""
        return time.monotonic() >= self.at or any(w.fired for w in self.watches)

    def watch(self, sock: socket.socket) -> Watch:
        """Have the reaper cut `sock` off at this deadline."""
        watch = self.fetcher.reaper.watch(sock, self.at)
        self.watches.append(watch)
        return watch

    def resolve(self, host: str, port: int) -> list[tuple[Any, ...]]:
        """Resolve a host name within the deadline; a lookup stuck in the C library keeps only its resolver thread."""
        if _is_address(host):  # nothing to look up, so nothing to wait behind
            return self.fetcher.resolve(host, port, allowed_gai_family(), socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
        return self.fetcher.lookup(host, port, self).result(timeout=max(0.0, self.remaining()))

    def close(self) -> None:
        """Release every socket the probe watched."""
        for watch in self.watches:
            self.fetcher.reaper.cancel(watch)


def _domain(host: str) -> str:
    """Return a host name's last two labels: the names one DNS operator most likely answers for."""
    return ".".join(host.rstrip(".").lower().rsplit(".", 2)[-2:])


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


_current = threading.local()  # .deadline: the Deadline of the probe this thread runs, or None


def current_deadline() -> Deadline | None:
    """Return the deadline of the probe running on this thread, if any."""
    return getattr(_current, "deadline", None)


class DeadlineConnectionMixin:
    """A urllib3 connection that resolves and connects within the probe's deadline and is watched by the reaper."""

    probe_watch: Watch | None = None
    probe_deadline: Deadline | None = None

    def _watch(self, deadline: Deadline, sock: socket.socket) -> None:
        if self.probe_deadline is deadline and self.probe_watch is not None and self.probe_watch.active:
            return  # already watched for this probe (an HTTPS connection connects before its request)
        self.release_watch()
        self.probe_watch, self.probe_deadline = deadline.watch(sock), deadline

    def release_watch(self) -> None:
        """Stop the reaper from cutting this connection off: it is going back to the pool."""
        if self.probe_watch is not None and self.probe_deadline is not None:
            self.probe_deadline.fetcher.reaper.cancel(self.probe_watch)
        self.probe_watch = self.probe_deadline = None

    def _new_conn(self) -> socket.socket:
        deadline = current_deadline()
        if deadline is None:
            return super()._new_conn()
        try:
            addresses = deadline.resolve(self._dns_host.strip("[]"), self.port)
        except socket.gaierror as exc:
            raise u3.NameResolutionError(self.host, self, exc) from exc
        except TimeoutError as exc:
            raise u3.ConnectTimeoutError(self, f"resolving {self.host} timed out") from exc
        if deadline.guarded:
            # Checked on the addresses connected to, not on the name: a name that resolves
            # elsewhere by now (DNS rebinding) is still refused.
            addresses = [a for a in addresses if policy.address_refusal(a[4][0]) is None]
            if not addresses:
                deadline.refused = True
                raise u3.NewConnectionError(self, "every address of the host is refused by the address policy")
        error: OSError = OSError("the host name resolved to no address")
        for family, kind, proto, _, address in addresses:
            sock = socket.socket(family, kind, proto)
            try:
                for option in self.socket_options or ():
                    sock.setsockopt(*option)
                if self.source_address:
                    sock.bind(self.source_address)
                self._watch(deadline, sock)  # from here on, TLS and the tunnel are cut off at the deadline
                sock.settimeout(max(deadline.remaining(), 0.001))  # connect() itself ends by the deadline too
                sock.connect(address)
                return sock
            except OSError as exc:
                self.release_watch()
                sock.close()
                error = exc
        if isinstance(error, TimeoutError):
            raise u3.ConnectTimeoutError(self, f"connecting to {self.host} timed out") from error
        raise u3.NewConnectionError(self, f"Failed to establish a new connection: {error}") from error

    def request(self, *args: Any, **kwargs: Any) -> None:
        """Send a request, first putting a reused pooled connection under this probe's deadline."""
        deadline = current_deadline()
        if deadline is not None and self.sock is not None:
            self._watch(deadline, self.sock)
            # A pooled connection may have been opened by a trusted probe, to anywhere.
            if deadline.guarded and policy.address_refusal(self.sock.getpeername()[0]) is not None:
                deadline.refused = True
                raise u3.NewConnectionError(self, "the pooled connection's address is refused by the address policy")
        super().request(*args, **kwargs)


class DeadlineHTTPConnection(DeadlineConnectionMixin, connection.HTTPConnection):
    """An HTTP connection under the probe's deadline."""


class DeadlineHTTPSConnection(DeadlineConnectionMixin, connection.HTTPSConnection):
    """An HTTPS connection under the probe's deadline."""


class DeadlinePoolMixin:
    """A pool whose connections leave the reaper's watch as they go back into the pool."""

    def _put_conn(self, conn: Any) -> None:
        if conn is not None:
            conn.release_watch()
        super()._put_conn(conn)


class DeadlineHTTPPool(DeadlinePoolMixin, connectionpool.HTTPConnectionPool):
    """An HTTP pool of deadline connections."""

    ConnectionCls = DeadlineHTTPConnection


class DeadlineHTTPSPool(DeadlinePoolMixin, connectionpool.HTTPSConnectionPool):
    """An HTTPS pool of deadline connections."""

    ConnectionCls = DeadlineHTTPSConnection


DEADLINE_POOLS = {"http": DeadlineHTTPPool, "https": DeadlineHTTPSPool}


class DeadlineAdapter(HTTPAdapter):
    """requests' adapter with deadline pools, directly and through HTTP(S) proxies."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        """Build the pool manager with deadline pools."""
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = DEADLINE_POOLS

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        """Return the proxy's manager with deadline pools."""
        manager = super().proxy_manager_for(proxy, **kwargs)
        if manager.pool_classes_by_scheme is poolmanager.pool_classes_by_scheme:  # SOCKS keeps its own pools
            manager.pool_classes_by_scheme = DEADLINE_POOLS
        return manager


@dataclass(frozen=True)
class Answer:
    """A whole HTTP answer, read within the deadline."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    latency_ms: int


class Fetcher:
    """Probe integrations over one pooled requests.Session, safe to share between threads."""

    def __init__(self, pool_size: int = 64, resolve: Resolve = socket.getaddrinfo,
                 environ: Mapping[str, str] = os.environ) -> None:
        # Probes go straight to the adapter: requests' Session would merge settings, build a cookie
        # jar and run hooks on every call (a sixth of a busy prober's CPU), and a prober wants none
        # of it. So no cookie is ever kept (one tenant's probe must never carry what another's was
        # sent), no redirect is followed (it would carry probe headers, keys, to the new host), and
        # ~/.netrc is never consulted for credentials.
        self.headers = default_headers()
        self.headers["User-Agent"] = USER_AGENT  # lets providers tell our probes apart
        # The environment's proxy settings and private CA are read once here, not on every request.
        self.proxies = {scheme: url for scheme, url in urllib.request.getproxies().items() if scheme != "no"}
        self.verify: bool | str = environ.get("REQUESTS_CA_BUNDLE") or environ.get("CURL_CA_BUNDLE") or True
        self.adapter = DeadlineAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
        self.reaper = Reaper()
        self.resolve = resolve
        # A lookup stuck in the C library cannot be interrupted and outlives its probe, so stuck
        # lookups are kept from taking every resolver thread: probes of one name share its lookup in
        # flight, and the names of one domain (its last two labels) hold at most a sixteenth of the
        # threads. A domain whose DNS hangs delays only its own probes; it takes 16 such domains at
        # once to hold every thread.
        self.resolver = ThreadPoolExecutor(RESOLVER_THREADS_PER_WORKER * pool_size, thread_name_prefix="resolve")
        self.per_domain = max(1, RESOLVER_THREADS_PER_WORKER * pool_size // 16)
        self.domain_slots: dict[str, threading.BoundedSemaphore] = {}
        self.lookups: dict[tuple[str, int], Future[list[tuple[Any, ...]]]] = {}
        self.lookups_lock = threading.RLock()  # a lookup done already runs its callback at once, under it

    def probe(self, spec: ProbeSpec, data: bytes | None = None) -> Outcome:
        """Probe once within spec.timeout_s and judge the result; never raise, never reveal headers or credentials.

        With `data`, send it as the request body: a webhook delivery, to which the address policy
        applies but the probes' request policy (GET or HEAD, credentials over https) does not.
        """
        got = self.exchange(spec, data)
        if isinstance(got, Outcome):
            return got
        try:
            return checks.judge(spec, got.status, got.body, got.latency_ms, got.headers)
        except Exception:  # a judge must never stall the prober, whatever an upstream answers
            log.exception("probe.judge_failed provider=%s status=%s", spec.provider or "-", got.status)
            return Outcome.failed("probe_error", got.latency_ms)

    def exchange(self, spec: ProbeSpec, data: bytes | None = None) -> Answer | Outcome:
        """Send spec's request and read the whole answer within spec.timeout_s; a failed Outcome if that fails. Never raises."""
        started = time.monotonic()
        proxies = self._proxies_for(spec.url)
        deadline = Deadline(self, started + spec.timeout_s, guarded=spec.guarded)
        _current.deadline = deadline

        def elapsed_ms() -> int:
            return int((time.monotonic() - started) * 1000)

        try:
            if spec.guarded and (refusal := self._guard(spec, deadline, proxies, data is None)) is not None:
                return Outcome.failed(refusal, elapsed_ms())
            response = self.adapter.send(
                self._prepare(spec, data),
                stream=True,
                timeout=spec.timeout_s,  # per recv; the reaper enforces the deadline over the whole probe
                verify=self.verify,
                proxies=proxies,
            )
            with response:
                body = bytearray()
                while True:
                    # read1 returns what has arrived, so a body under the size cap ends by the deadline.
                    chunk = response.raw.read1(READ_SIZE, decode_content=True)
                    if not chunk:
                        break
                    body += chunk
                    if len(body) > spec.max_body_bytes:
                        if data is not None:
                            break  # a delivery is judged by its status: read no further than the cap
                        return Outcome.failed("body_too_large", elapsed_ms())
                    if deadline.passed():
                        return Outcome.failed("timeout", elapsed_ms())
            if deadline.passed():  # a cut-off body can look complete
                return Outcome.failed("timeout", elapsed_ms())
            return Answer(response.status_code, response.headers, bytes(body), elapsed_ms())
        except Exception as exc:  # every failure becomes a short reason, whatever raised it
            if deadline.refused:
                return Outcome.failed(policy.REASON, elapsed_ms())
            # Past the deadline, whatever broke did so because the reaper cut the socket off.
            return Outcome.failed("timeout" if deadline.passed() else reason_for(exc), elapsed_ms())
        finally:
            _current.deadline = None
            deadline.close()

    def _guard(self, spec: ProbeSpec, deadline: Deadline, proxies: Mapping[str, str], probe: bool = True) -> str | None:
        """Return the reason to refuse a guarded probe (or delivery) before it sends anything, or None."""
        if probe and policy.request_refusal(spec.method, spec.url, (name for name, _ in spec.headers)) is not None:
            return policy.REASON
        if not proxies:
            return None  # checked on each address connected to (see _new_conn)
        # Through a proxy, this prober connects only to the proxy: the target's addresses are checked
        # here instead, as this prober resolves them (the proxy resolves on its own).
        deadline.guarded = False
        try:
            addresses = deadline.resolve(urlsplit(spec.url).hostname or "", 0)
        except socket.gaierror:
            return "connection_error"
        return policy.REASON if policy.addresses_refusal(a[4][0] for a in addresses) else None

    def _prepare(self, spec: ProbeSpec, data: bytes | None = None) -> requests.PreparedRequest:
        """Return the probe's request: the default headers, overridden by its own."""
        headers = CaseInsensitiveDict(self.headers)
        headers.update(spec.headers)
        prepared = requests.PreparedRequest()
        prepared.prepare(method=spec.method, url=spec.url, headers=headers, data=data if data is not None else spec.body)
        return prepared

    def lookup(self, host: str, port: int, deadline: Deadline) -> Future[list[tuple[Any, ...]]]:
        """Return the lookup in flight for this name, starting one when its domain has a thread free by the deadline."""
        with self.lookups_lock:
            future = self.lookups.get((host, port))
            if future is not None:
                return future
            slots = self.domain_slots.setdefault(_domain(host), threading.BoundedSemaphore(self.per_domain))
        if not slots.acquire(timeout=max(0.0, deadline.remaining())):
            raise TimeoutError(f"no resolver thread free for {host}'s domain")
        with self.lookups_lock:
            future = self.lookups.get((host, port))
            if future is not None:  # another probe of the name started it meanwhile
                slots.release()
                return future
            future = self.resolver.submit(self.resolve, host, port, allowed_gai_family(), socket.SOCK_STREAM)
            self.lookups[host, port] = future
            future.add_done_callback(lambda _f: self._forget(host, port, future, slots))
            return future

    def _forget(self, host: str, port: int, future: Future[list[tuple[Any, ...]]], slots: threading.BoundedSemaphore) -> None:
        with self.lookups_lock:
            if self.lookups.get((host, port)) is future:
                del self.lookups[host, port]
        slots.release()

    def _proxies_for(self, url: str) -> dict[str, str]:
        """Return the proxies to use for a URL, honouring no_proxy."""
        if not self.proxies or urllib.request.proxy_bypass_environment(urlsplit(url).hostname or ""):
            return {}
        return self.proxies

    def close(self) -> None:
        """Close pooled connections and stop the reaper and resolver threads."""
        self.adapter.close()
        self.reaper.close()
        self.resolver.shutdown(wait=False, cancel_futures=True)


def reason_for(exc: BaseException) -> str:
    """Return a short, secret-free reason for an exception raised while probing."""
    if isinstance(exc, (requests.Timeout, u3.TimeoutError)):
        return "timeout"
    if isinstance(exc, (requests.exceptions.SSLError, u3.SSLError)):
        return "tls_error"
    if isinstance(exc, requests.exceptions.ProxyError):
        return "proxy_error"
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError, u3.ProtocolError, u3.DecodeError)):
        return "protocol_error"
    if isinstance(exc, requests.ConnectionError):
        return "connection_error"
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.InvalidHeader, ValueError)):
        return "invalid_request"
    return "probe_error"
