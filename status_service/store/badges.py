"""Badge tokens in Redis: each reads one tenant's badge, and nothing else.

Keys: P{t:ID}:badges, hash token id -> JSON {digest, created_at}: a tenant's tokens, dropped with the
tenant's data (by the admin API or by a config file that no longer declares it), so no token outlives
its tenant or reads a later tenant of the same id. P{reg}:badges, hash token SHA-256 digest -> JSON
{tenant, id, created_at}: finds a token's tenant; an entry whose tenant no longer lists it is stale and
goes when next read. Apart from the API keys' hash, so a badge token is no key of /status or of any
other endpoint.
"""
from __future__ import annotations

import json
import secrets

from . import Store, _text


class Badges:
    """The badge tokens' reads and writes, over the Store's client and key space."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def key(self) -> str:
        """Return the key of every badge token's digest."""
        return f"{self.store.prefix}{{reg}}:badges"

    def tenant_key(self, tenant_id: str) -> str:
        """Return the key of a tenant's tokens (one of Store.tenant_keys, dropped with the tenant)."""
        return self.store.tenant_base(tenant_id) + "badges"

    def issue(self, digest: str, tenant_id: str, at: str) -> str:
        """Register a new token's digest for a tenant under a fresh id, and return the id."""
        token_id = "badge_" + secrets.token_hex(6)
        client = self.store.client
        self.store._call(lambda: client.hset(self.tenant_key(tenant_id), token_id, json.dumps({"digest": digest, "created_at": at})))
        self.store._call(lambda: client.hset(self.key(), digest, json.dumps({"tenant": tenant_id, "id": token_id, "created_at": at})))
        return token_id

    def tenant_of(self, digest: str) -> str | None:
        """Return the tenant whose badge this token reads, if it is one and its tenant still lists it."""
        raw = self.store._call(lambda: self.store.client.hget(self.key(), digest))
        if raw is None:
            return None
        entry = json.loads(raw)
        listed = self.store._call(lambda: self.store.client.hget(self.tenant_key(entry["tenant"]), entry["id"]))
        if listed is None or json.loads(listed)["digest"] != digest:  # its tenant went (and may be back, anew)
            self.store._call(lambda: self.store.client.hdel(self.key(), digest))
            return None
        return entry["tenant"]

    def listed(self, tenant_id: str) -> list[dict[str, str]]:
        """Return a tenant's tokens, id and creation time, oldest first; never a token."""
        found = self.store._call(lambda: self.store.client.hgetall(self.tenant_key(tenant_id)))
        tokens = [{"id": _text(i), "created_at": json.loads(e)["created_at"]} for i, e in found.items()]
        return sorted(tokens, key=lambda e: (e["created_at"], e["id"]))

    def revoke(self, tenant_id: str, token_id: str) -> bool:
        """Revoke a tenant's token; return whether it had one of this id."""
        raw = self.store._call(lambda: self.store.client.hget(self.tenant_key(tenant_id), token_id))
        if raw is None:
            return False
        self.store._call(lambda: self.store.client.hdel(self.tenant_key(tenant_id), token_id))
        self.store._call(lambda: self.store.client.hdel(self.key(), json.loads(raw)["digest"]))
        return True
