"""Maintenance windows in Redis, each tenant's in its own slot, and one counter that says when any changed.

Keys: P{t:ID}:maintenance, hash window id -> JSON {starts_at, ends_at (epoch s), integrations,
types, note, created_at} (dropped with the tenant's data); P{maint}:version, bumped with every
change, which probers read each tick. Probers also read a tenant's windows before each write of
its report, so every prober renders a report from the windows as they are.
"""
from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

from ..model import Window
from . import Store, _text

KEEP_ENDED_S = 7 * 86400.0  # a window that ended this long ago is dropped when another is made

# Add a window (ARGV[1], its JSON ARGV[2]) unless the tenant has ARGV[4] already, dropping those that
# ended before ARGV[3] (epoch s) first. Returns 1, 0 when the tenant is full, -1 when it is gone
# (deleted meanwhile: a tenant made again under its id must not find the window).
_ADD = """
local seeded = redis.call('GET', KEYS[2])
if not seeded or string.sub(seeded, 1, 5) == 'gone:' then return -1 end
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if cjson.decode(all[i + 1])['ends_at'] < tonumber(ARGV[3]) then redis.call('HDEL', KEYS[1], all[i]) end
end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


class Maintenance:
    """The maintenance windows' reads and writes, over the Store's client and key space."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def key(self, tenant_id: str) -> str:
        """Return the key of a tenant's windows."""
        return self.store.tenant_base(tenant_id) + "maintenance"

    def version_key(self) -> str:
        """Return the key of the counter bumped with every change of any tenant's windows."""
        return f"{self.store.prefix}{{maint}}:version"

    def add(self, tenant_id: str, window_id: str, definition: Mapping[str, Any], now: float, most: int) -> int:
        """Store a window, dropping the tenant's that ended long ago: 1, 0 if it has `most` windows already, -1 if the tenant is gone."""
        args = [window_id, json.dumps(definition), now - KEEP_ENDED_S, most]
        done = int(self.store._call(lambda: self.store._script(_ADD, [self.key(tenant_id), self.store.registry_key(tenant_id)], args)))
        if done == 1:
            self._bump()
        return done

    def remove(self, tenant_id: str, window_id: str) -> bool:
        """Delete a window; False if there was none."""
        done = bool(self.store._call(lambda: self.store.client.hdel(self.key(tenant_id), window_id)))
        if done:
            self._bump()
        return done

    def _bump(self) -> None:
        self.store._call(lambda: self.store.client.incr(self.version_key()))

    def version(self) -> int:
        """Return the counter of changes (0 before any, or after Redis lost it)."""
        return int(self.store._call(lambda: self.store.client.get(self.version_key())) or 0)

    def definitions(self, tenant_id: str) -> dict[str, dict[str, Any]]:
        """Return a tenant's windows as stored: window id -> definition."""
        return {_text(k): json.loads(v) for k, v in self.store._call(lambda: self.store.client.hgetall(self.key(tenant_id))).items()}

    def windows(self, tenant_ids: Iterable[str]) -> dict[str, tuple[Window, ...]]:
        """Return the windows of each of these tenants (those with none map to ()), ordered by start."""
        ids = list(tenant_ids)

        def run() -> list[dict[bytes, bytes]]:
            pipe = self.store.client.pipeline(transaction=False)
            for tenant_id in ids:
                pipe.hgetall(self.key(tenant_id))
            return pipe.execute()

        found = self.store._call(run) if ids else []
        return {
            tenant_id: tuple(sorted((window(_text(k), json.loads(v)) for k, v in raw.items()), key=lambda w: (w.starts_at, w.id)))
            for tenant_id, raw in zip(ids, found)
        }


def window(window_id: str, definition: Mapping[str, Any]) -> Window:
    """Return the window a stored definition describes."""
    return Window(window_id, float(definition["starts_at"]), float(definition["ends_at"]),
                  tuple(definition.get("integrations") or ()), tuple(definition.get("types") or ()), definition.get("note", ""))
