"""A web worker's memory: which key digest is whose, and each tenant's report, kept right by push.

The prober publishes every replaced report ("r <tenant> <version>") and every new key registry
("k") on one channel. While this worker is subscribed to it (`live`), what it remembers is current,
and /status is served with no Redis round trip. While it is not, every request reads Redis, and the
memory is used only to ride out a short Redis outage.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict

from ..store import Store, StoreUnavailable, StoredReport

log = logging.getLogger("status_service.web")

MAX_KEYS = 100_000  # digests remembered; only digests that matched a registered key are kept
RECONNECT_S = (0.5, 5.0)  # first and longest wait before subscribing again
RETRY_S = 1.0  # while Redis is unreachable, how often a worker tries it again


class Mirror:
    """Bounded, thread-safe memory of key owners and reports; `max_bytes` 0 remembers nothing."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.live = False
        self.epoch = 0  # bumped whenever memory is cleared: a read begun before must not be stored
        self._lock = threading.Lock()
        self._owners: dict[str, str] = {}  # key digest -> tenant id
        self._reports: OrderedDict[str, StoredReport] = OrderedDict()  # least recently used first
        self._floors: dict[str, int] = {}  # tenant id -> lowest report version still current
        self._generation: int | None = None  # of the key registry, as last polled
        self._bytes = 0

    def tenant_of(self, digests: list[str]) -> str | None:
        """Return the tenant that one of these digests belongs to, if known."""
        with self._lock:
            return next((self._owners[d] for d in digests if d in self._owners), None)

    def find(self, digests: list[str]) -> StoredReport | None:
        """Return the remembered report of the tenant owning one of these digests."""
        with self._lock:
            tenant_id = next((self._owners[d] for d in digests if d in self._owners), None)
            found = self._reports.get(tenant_id) if tenant_id is not None else None
            if found is not None:
                self._reports.move_to_end(tenant_id)  # type: ignore[arg-type]
            return found

    def remember(self, epoch: int, digest: str, found: StoredReport) -> None:
        """Keep a key owner and report read from Redis since `epoch`, unless a change overtook it."""
        size = len(found.body) + len(found.stale)
        with self._lock:
            if not self.max_bytes or epoch != self.epoch:
                return
            if len(self._owners) < MAX_KEYS or digest in self._owners:
                self._owners[digest] = found.tenant_id
            current = self._reports.get(found.tenant_id)
            if found.version < self._floors.get(found.tenant_id, 0) or (current and current.version > found.version):
                return
            if size > self.max_bytes:
                return
            self._drop(found.tenant_id)
            self._reports[found.tenant_id] = found
            self._bytes += size
            while self._bytes > self.max_bytes:
                self._drop(next(iter(self._reports)))

    def changed(self, message: str | None) -> None:
        """Apply one message of the changes channel; None says the subscription has just begun.

        "g <n>" is the key registry's generation, polled with each ping: a change of it that no
        "k" announced means a message was lost, and is handled as one.
        """
        with self._lock:
            if message is not None and message.startswith("g "):
                generation = int(message[2:])
                changed = self._generation is not None and generation != self._generation
                self._generation = generation
                if not changed:
                    return
                message = "k"
            if message is None or message == "k":
                # Subscribed afresh (changes may have been missed) or keys changed: forget who owns what.
                self._owners.clear()
                self._floors.clear()
                if message is None:
                    self._reports.clear()
                    self._bytes = 0
                    self._generation = None
                    self.live = True
                self.epoch += 1
                return
            kind, _, rest = message.partition(" ")
            tenant_id, _, version = rest.rpartition(" ")
            if kind != "r" or not version.isdigit():
                return
            floor = max(int(version), self._floors.get(tenant_id, 0))
            self._floors[tenant_id] = floor
            current = self._reports.get(tenant_id)
            if current is not None and current.version < floor:
                self._drop(tenant_id)

    def went_down(self) -> None:
        """Stop trusting memory on its own: the push channel is down, so changes may be missed."""
        self.live = False

    def replace(self, aged: StoredReport) -> None:
        """Swap in an aged copy of a remembered report of the same version."""
        with self._lock:
            current = self._reports.get(aged.tenant_id)
            if current is not None and current.version == aged.version:
                self._drop(aged.tenant_id)
                self._reports[aged.tenant_id] = aged
                self._bytes += len(aged.body) + len(aged.stale)
                while self._bytes > self.max_bytes:  # an aged body may be longer than the one it replaces
                    self._drop(next(iter(self._reports)))

    def _drop(self, tenant_id: str) -> None:
        gone = self._reports.pop(tenant_id, None)
        if gone is not None:
            self._bytes -= len(gone.body) + len(gone.stale)

    @property
    def bytes(self) -> int:
        """Return the bytes of report bodies and stale times held."""
        return self._bytes


class Link:
    """Whether this worker reaches Redis, and since when it has not; logs once per change."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._failed_at = 0.0

    def up(self) -> None:
        """Record a successful round trip."""
        if self._down_since is None:
            return
        with self._lock:
            if self._down_since is not None:
                log.info("redis.recovered down_s=%.1f", time.monotonic() - self._down_since)
                self._down_since = None

    def down(self, error: StoreUnavailable) -> float:
        """Record a failed round trip; return how long Redis has been unreachable (seconds)."""
        with self._lock:
            now = self._failed_at = time.monotonic()
            if self._down_since is None:
                self._down_since = now
                log.warning("redis.unavailable error=%s", error)
            return now - self._down_since

    def resting(self) -> float | None:
        """Return the outage's length while Redis failed less than RETRY_S ago (don't ask it yet), else None.

        A hung Redis costs a request its whole timeout: one try a second per worker is enough to
        notice it is back, and the other requests answer at once meanwhile.
        """
        down_since = self._down_since
        if down_since is None or time.monotonic() - self._failed_at >= RETRY_S:
            return None
        return time.monotonic() - down_since


def follow(store: Store, mirror: Mirror, link: Link, stopped: threading.Event) -> None:
    """Keep `mirror` subscribed to the changes channel until `stopped`, reconnecting with backoff.

    The subscription is also this worker's first news of an outage: a broken link starts it.
    """

    def handle(message: str | None) -> None:
        if message is None:
            link.up()
        mirror.changed(message)

    wait_s = RECONNECT_S[0]
    while not stopped.is_set():
        try:
            store.follow_changes(handle, stopped)
        except StoreUnavailable as exc:
            if not exc.reachable:
                link.down(exc)
        except Exception:  # a bug here must not end the thread: memory would never be trusted again
            log.exception("changes.follow_failed")
        if mirror.live:
            wait_s = RECONNECT_S[0]
        mirror.went_down()
        stopped.wait(wait_s)
        wait_s = min(RECONNECT_S[1], wait_s * 2)
