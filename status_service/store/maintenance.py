"""Maintenance windows in Redis: one hash for every tenant's, read whole by each prober every few seconds.

Key: P{maint}:windows, hash "<tenant>\\x1f<window id>" -> JSON {starts_at, ends_at (epoch s),
integrations, types, note, created_at}. Windows are few (each ends within 7 days unless made
`long`), and one that ended more than KEEP_ENDED_S ago is dropped when a window is added.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

from ..model import MEMBER_SEP, Window
from . import Store, _text

KEEP_ENDED_S = 7 * 86400.0


class Maintenance:
    """The maintenance windows' reads and writes, over the Store's client and key space."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def key(self) -> str:
        """Return the key of every tenant's windows."""
        return f"{self.store.prefix}{{maint}}:windows"

    def add(self, tenant_id: str, window_id: str, definition: Mapping[str, Any], now: float) -> None:
        """Store a window, and drop those that ended long ago."""

        def run() -> None:
            ended = [field for field, raw in self.store.client.hgetall(self.key()).items()
                     if json.loads(raw)["ends_at"] < now - KEEP_ENDED_S]
            pipe = self.store.client.pipeline(transaction=False)
            if ended:
                pipe.hdel(self.key(), *ended)
            pipe.hset(self.key(), f"{tenant_id}{MEMBER_SEP}{window_id}", json.dumps(definition))
            pipe.execute()

        self.store._call(run)

    def remove(self, tenant_id: str, window_id: str) -> bool:
        """Delete a window; False if there was none."""
        return bool(self.store._call(lambda: self.store.client.hdel(self.key(), f"{tenant_id}{MEMBER_SEP}{window_id}")))

    def remove_tenant(self, tenant_id: str) -> None:
        """Delete every window of a tenant (it was deleted)."""
        fields = [f"{tenant_id}{MEMBER_SEP}{w}" for w in self.definitions().get(tenant_id, {})]
        if fields:
            self.store._call(lambda: self.store.client.hdel(self.key(), *fields))

    def definitions(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Return every tenant's windows as stored: tenant -> window id -> definition."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for field, raw in self.store._call(lambda: self.store.client.hgetall(self.key())).items():
            tenant_id, _, window_id = _text(field).partition(MEMBER_SEP)
            out.setdefault(tenant_id, {})[window_id] = json.loads(raw)
        return out

    def windows(self) -> dict[str, tuple[Window, ...]]:
        """Return every tenant's windows, ordered by start."""
        return {
            tenant_id: tuple(sorted((window(i, d) for i, d in found.items()), key=lambda w: (w.starts_at, w.id)))
            for tenant_id, found in self.definitions().items()
        }


def window(window_id: str, definition: Mapping[str, Any]) -> Window:
    """Return the window a stored definition describes."""
    return Window(window_id, float(definition["starts_at"]), float(definition["ends_at"]),
                  tuple(definition.get("integrations") or ()), tuple(definition.get("types") or ()), definition.get("note", ""))
