"""The admin API's part of Redis: tenants and keys made through it, admin keys, and the audit stream.

Everything here is under the {reg} hash tag, so each change is one atomic script, on Redis Cluster
too. Layout (P is the prefix), besides the key registry of the package's docstring:
  P{reg}:api:tenants      hash  tenant id -> JSON {created_at} of a tenant made through the API
  P{reg}:api:keys:TENANT  hash  key id -> JSON {digest, created_at} of a key made through the API
  P{reg}:audit            stream  one entry a change: admin, action, object, at; trimmed by age
A key change bumps P{reg}:generation and publishes "k", so web workers forget who owns which key.
"""
from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from . import _HISTORY_LUA, Store, _text

AUDIT_RETENTION_S = 90 * 24 * 3600

_AUDIT = """
local function audit(stream, retention_ms, admin, action, object, at)
  local t = redis.call('TIME')
  local oldest = tonumber(t[1]) * 1000 - tonumber(retention_ms)
  redis.call('XADD', stream, 'MINID', string.format('%d', oldest), '*',  -- exact: few writes, and a promise
             'admin', admin, 'action', action, 'object', object, 'at', at)
end
"""

_CREATE_TENANT = _AUDIT + """
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 or redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
audit(KEYS[3], ARGV[5], ARGV[3], 'tenant.create', 'tenants/' .. ARGV[1], ARGV[4])
return 1
"""

# -1: declared in the config file (remove it there); 0: no such tenant; else the deleted tenant's
# incarnation (its keys are gone with it).
_DELETE_TENANT = _AUDIT + """
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return -1 end
local made = redis.call('HGET', KEYS[1], ARGV[1])
if not made then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
for _, raw in ipairs(redis.call('HVALS', KEYS[6])) do redis.call('HDEL', KEYS[3], cjson.decode(raw)['digest']) end
redis.call('DEL', KEYS[6])
redis.call('INCR', KEYS[4])
redis.call('PUBLISH', ARGV[5], 'k')
audit(KEYS[5], ARGV[4], ARGV[2], 'tenant.delete', 'tenants/' .. ARGV[1], ARGV[3])
return cjson.decode(made)['inc']
"""

# A tenant's own data is written after its creation and dropped after its deletion, each in its own
# slot; the incarnation orders them, so a creation racing a deletion of the same id leaves no data
# of a deleted tenant behind, and a deletion never takes a newer tenant's data.
_WRITE_TENANT = _HISTORY_LUA + """
local seeded = redis.call('GET', KEYS[1])
if seeded == 'gone:' .. ARGV[1] then return 0 end
if seeded and string.sub(seeded, 1, 5 + #ARGV[1]) == 'api:' .. ARGV[1] .. ':' then return 0 end  -- written already
if seeded then
  -- Data of an earlier tenant of this id (a deletion a crash cut short, a config file's): not this one's.
  drop_history(nil)
  for i = 2, #KEYS do redis.call('DEL', KEYS[i]) end
end
redis.call('SET', KEYS[1], 'api:' .. ARGV[1] .. ':' .. ARGV[2])
return 1
"""

# Returns the ids of the integrations dropped, for the schedule.
_DROP_TENANT = _HISTORY_LUA + """
local seeded = redis.call('GET', KEYS[1])
if seeded and string.sub(seeded, 1, 4) == 'api:' and string.sub(seeded, 5, 4 + #ARGV[1]) ~= ARGV[1] then return {} end
local ids = redis.call('HKEYS', KEYS[7])
drop_history(nil)
for i = 1, #KEYS do redis.call('DEL', KEYS[i]) end
redis.call('SET', KEYS[1], 'gone:' .. ARGV[1], 'PX', 600000)  -- a late write of this incarnation is refused
return ids
"""

_CREATE_KEY = _AUDIT + """
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('HEXISTS', KEYS[4], ARGV[2]) == 1 then return -1 end  -- the id is taken: draw another
redis.call('HSET', KEYS[3], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[4], ARGV[2], ARGV[4])
audit(KEYS[5], ARGV[7], ARGV[5], 'key.create', 'tenants/' .. ARGV[1] .. '/keys/' .. ARGV[2], ARGV[6])
return 1
"""

_DELETE_KEY = _AUDIT + """
local raw = redis.call('HGET', KEYS[2], ARGV[2])
if not raw then return 0 end
redis.call('HDEL', KEYS[1], cjson.decode(raw)['digest'])
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[6], 'k')
audit(KEYS[4], ARGV[5], ARGV[3], 'key.delete', 'tenants/' .. ARGV[1] .. '/keys/' .. ARGV[2], ARGV[4])
return 1
"""


@dataclass(frozen=True)
class TenantInfo:
    """A tenant as the admin API shows it."""

    id: str
    source: str  # "file" (the config file declares it) or "api"
    created_at: str | None = None  # for tenants made through the API


class Admin:
    """Reads and atomic changes of the admin API's objects, on a Store's client."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- key names ---------------------------------------------------------------------------
    def audit_key(self) -> str:
        """Return the key of the audit stream."""
        return f"{self.store.prefix}{{reg}}:audit"

    # -- reads -------------------------------------------------------------------------------
    def admin_of(self, digests: list[str]) -> str | None:
        """Return the id of the admin key among these digests (from the config file), if any."""
        found = self.store._call(lambda: self.store.client.hmget(self.store.admins_key(), digests))
        return next((_text(f) for f in found if f is not None), None)

    def owns_tenant_key(self, digests: list[str]) -> bool:
        """Return whether one of these digests is a tenant's API key."""
        found = self.store._call(lambda: self.store.client.hmget(self.store.keys_key(), digests))
        return any(f is not None for f in found)

    def tenant(self, tenant_id: str) -> TenantInfo | None:
        """Return one tenant, from the config file or the API."""
        client = self.store.client
        in_file, made = self.store._call(lambda: (
            client.sismember(self.store.tenants_key(), tenant_id), client.hget(self.store.api_tenants_key(), tenant_id),
        ))
        if in_file:
            return TenantInfo(tenant_id, "file")
        if made is not None:
            return TenantInfo(tenant_id, "api", json.loads(made)["created_at"])
        return None

    def tenants(self, after: str, limit: int) -> tuple[list[TenantInfo], str | None]:
        """Return up to `limit` tenants whose ids sort after `after`, and the cursor of the next page."""
        client = self.store.client
        in_file, made = self.store._call(lambda: (
            client.smembers(self.store.tenants_key()), client.hgetall(self.store.api_tenants_key()),
        ))
        every = {_text(t): TenantInfo(_text(t), "file") for t in in_file}
        for raw_id, raw in made.items():
            every.setdefault(_text(raw_id), TenantInfo(_text(raw_id), "api", json.loads(raw)["created_at"]))
        ids = sorted(t for t in every if t > after)
        page = [every[t] for t in ids[:limit]]
        return page, (page[-1].id if len(ids) > limit else None)

    def keys(self, tenant_id: str) -> list[dict[str, str]]:
        """Return the ids and creation times of a tenant's keys made through the API, oldest first."""
        raw = self.store._call(lambda: self.store.client.hgetall(self.store.api_keys_key(tenant_id)))
        listed = [{"id": _text(kid), "created_at": json.loads(info)["created_at"]} for kid, info in raw.items()]
        return sorted(listed, key=lambda k: (k["created_at"], k["id"]))

    def audit(self, after: str, limit: int) -> tuple[list[dict[str, str]], str | None]:
        """Return up to `limit` audit entries after the entry id `after` ("" from the start), and the next cursor."""
        start = f"({after}" if after else "-"
        found = self.store._call(lambda: self.store.client.xrange(self.audit_key(), start, "+", count=limit + 1))
        entries = [{"id": _text(eid), **{_text(k): _text(v) for k, v in fields.items()}} for eid, fields in found]
        page = entries[:limit]
        return page, (page[-1]["id"] if len(entries) > limit else None)

    # -- changes -----------------------------------------------------------------------------
    def create_tenant(self, tenant_id: str, admin: str, at: str, body: bytes) -> bool:
        """Make a tenant with no integrations and its empty report; False if the id is taken."""
        incarnation = uuid.uuid4().hex
        keys = [self.store.api_tenants_key(), self.store.tenants_key(), self.audit_key()]
        args = [tenant_id, json.dumps({"created_at": at, "inc": incarnation}), admin, at, AUDIT_RETENTION_S * 1000]
        if not self.store._call(lambda: self.store._script(_CREATE_TENANT, keys, args)):
            return False
        self._write(tenant_id, incarnation, body)
        return True

    def _write(self, tenant_id: str, incarnation: str, body: bytes) -> None:
        """Write a new tenant's own data: its registry (REV "0": no integration change yet) and empty report."""
        if self.store._call(lambda: self.store._script(_WRITE_TENANT, self.store.tenant_keys(tenant_id), [incarnation, "0"])):
            self.store.put_reports([(tenant_id, 1, body, {}, float("inf"))], {tenant_id: "0"})

    def finish(self, tenant_id: str, body: bytes) -> bool:
        """Finish what a crash interrupted: the creation of a tenant made through the API; False if there is none."""
        made = self.store._call(lambda: self.store.client.hget(self.store.api_tenants_key(), tenant_id))
        if made is None:
            return False
        self._write(tenant_id, json.loads(made)["inc"], body)
        return True

    def delete_tenant(self, tenant_id: str, admin: str, at: str) -> list[str] | int:
        """Delete a tenant made through the API, its keys and all its data.

        Returns the ids of its integrations (now to leave the schedule), 0 if there is no such
        tenant, or -1 if the config file declares it.
        """
        keys = [self.store.api_tenants_key(), self.store.tenants_key(), self.store.keys_key(), self.store.generation_key(),
                self.audit_key(), self.store.api_keys_key(tenant_id)]
        args = [tenant_id, admin, at, AUDIT_RETENTION_S * 1000, self.store.channel]
        done = self.store._call(lambda: self.store._script(_DELETE_TENANT, keys, args))
        if done == 0:
            # Deleted already, but a crash may have left its data: finish that, unless a creation made it
            # meanwhile (it registers its incarnation before it writes the data, so it is read second).
            seeded = _text(self.store._call(lambda: self.store.client.get(self.store.registry_key(tenant_id))) or b"")
            made = self.store._call(lambda: self.store.client.hget(self.store.api_tenants_key(), tenant_id))
            if not seeded.startswith("api:") or (made is not None and json.loads(made)["inc"] == seeded.split(":")[1]):
                return 0
            done = seeded.split(":")[1].encode()
        if isinstance(done, bytes):  # its incarnation: drop its data, unless a newer tenant of the id wrote it
            ids = self.store._call(lambda: self.store._script(_DROP_TENANT, self.store.tenant_keys(tenant_id), [done.decode()]))
            return [_text(i) for i in ids]
        return int(done)

    def create_key(self, tenant_id: str, key_id: str, digest: str, admin: str, at: str) -> int:
        """Register a key's digest for a tenant: 1, 0 if there is no such tenant, -1 if the key id is taken."""
        keys = [self.store.api_tenants_key(), self.store.tenants_key(), self.store.keys_key(), self.store.api_keys_key(tenant_id),
                self.audit_key()]
        args = [tenant_id, key_id, digest, json.dumps({"digest": digest, "created_at": at}), admin, at,
                AUDIT_RETENTION_S * 1000]
        return int(self.store._call(lambda: self.store._script(_CREATE_KEY, keys, args)))

    def issue_key(self, tenant_id: str, digest: str, admin: str, at: str) -> str | None:
        """Register a new key's digest under a fresh id and return the id; None if there is no such tenant."""
        while True:
            key_id = "key_" + secrets.token_hex(6)
            made = self.create_key(tenant_id, key_id, digest, admin, at)
            if made >= 0:  # else a taken id: draw again
                return key_id if made else None

    def delete_key(self, tenant_id: str, key_id: str, admin: str, at: str) -> bool:
        """Revoke a key made through the API; False if the tenant has no such key."""
        keys = [self.store.keys_key(), self.store.api_keys_key(tenant_id), self.store.generation_key(), self.audit_key()]
        args: list[Any] = [tenant_id, key_id, admin, at, AUDIT_RETENTION_S * 1000, self.store.channel]
        return bool(self.store._call(lambda: self.store._script(_DELETE_KEY, keys, args)))
