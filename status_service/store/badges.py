"""Badge tokens in Redis: each reads one tenant's badge, and nothing else.

Key: P{reg}:badges, hash token SHA-256 digest -> JSON {tenant, id, created_at}. Apart from the API
keys' hash, so a badge token is no key of /status or of any other endpoint.
"""
from __future__ import annotations

import json
import secrets
from typing import Any

from . import Store, _text


class Badges:
    """The badge tokens' reads and writes, over the Store's client and key space."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def key(self) -> str:
        """Return the key of every badge token's digest."""
        return f"{self.store.prefix}{{reg}}:badges"

    def issue(self, digest: str, tenant_id: str, at: str) -> str:
        """Register a new token's digest for a tenant under a fresh id, and return the id."""
        token_id = "badge_" + secrets.token_hex(6)
        entry = json.dumps({"tenant": tenant_id, "id": token_id, "created_at": at})
        self.store._call(lambda: self.store.client.hset(self.key(), digest, entry))
        return token_id

    def tenant_of(self, digest: str) -> str | None:
        """Return the tenant whose badge this token reads, if it is one."""
        raw = self.store._call(lambda: self.store.client.hget(self.key(), digest))
        return json.loads(raw)["tenant"] if raw is not None else None

    def _all(self) -> dict[str, dict[str, Any]]:
        return {_text(d): json.loads(v) for d, v in self.store._call(lambda: self.store.client.hgetall(self.key())).items()}

    def listed(self, tenant_id: str) -> list[dict[str, str]]:
        """Return a tenant's tokens, id and creation time, oldest first; never a token."""
        found = [{"id": e["id"], "created_at": e["created_at"]} for e in self._all().values() if e["tenant"] == tenant_id]
        return sorted(found, key=lambda e: (e["created_at"], e["id"]))

    def revoke(self, tenant_id: str, token_id: str | None = None) -> int:
        """Revoke a tenant's token (None: all of them, as its tenant goes); return how many."""
        gone = [d for d, e in self._all().items() if e["tenant"] == tenant_id and token_id in (None, e["id"])]
        if gone:
            self.store._call(lambda: self.store.client.hdel(self.key(), *gone))
        return len(gone)
