"""A small, bounded, thread-safe map whose entries expire: the web tier's short memory."""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """Keep up to `max_entries` values for `ttl_s` seconds each, evicting the least recently used."""

    def __init__(self, ttl_s: float, max_entries: int) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K, now: float) -> V | None:
        """Return the value if present and younger than the time-to-live."""
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            if now - found[0] >= self.ttl_s:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return found[1]

    def put(self, key: K, value: V, now: float) -> None:
        """Store a value, evicting the oldest entry when full."""
        if self.ttl_s <= 0:
            return
        with self._lock:
            self._entries[key] = (now, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
