"""The only module that speaks Redis: key names, reads, writes and Lua scripts.

Key layout (P is the configurable prefix). Each tenant's keys share one hash tag, and so do the
schedule's and the registry's. Every multi-key command and script stays within one hash tag, so
the layout works on Redis Cluster; atomic steps are Lua scripts, never MULTI across tags.
  P{sched}:due        zset  integration member -> due time (ms); a claim pushes it to its lease end
  P{fleet}:probers    zset  prober id -> heartbeat expiry (ms)
  P{reg}:keys         hash  API key SHA-256 digest -> tenant id
  P{reg}:tenants      set   registered tenant ids
  P{reg}:config       str   fingerprint of the config last seeded (absent: Redis lost its data)
  P{t:ID}:results     hash  integration id -> state JSON
  P{t:ID}:version     str   counter bumped with every results write
  P{t:ID}:report      hash  body (prebuilt JSON), v (results version it was built from),
                            until (ms when its first result turns stale), stale (JSON: id -> stale time)
Every key's size is bounded by the registry: one entry per tenant, key or integration.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from .model import State, split_member

T = TypeVar("T")

# Claim what is due: push each due member to its lease end, so a dead claimant's work comes back.
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[3]))
for i = 1, #due, 2 do redis.call('ZADD', KEYS[1], ARGV[2], due[i]) end
return due
"""

# Reschedule members still held under our lease; a member removed or re-claimed meanwhile is left alone.
_COMPLETE = """
local done = 0
for i = 1, #ARGV, 3 do
  if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[i])) == tonumber(ARGV[i + 1]) then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[i + 2], ARGV[i])
    done = done + 1
  end
end
return done
"""

# Write states, bump the version and read every state back: one consistent snapshot of a tenant.
_RECORD = """
for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
local version = redis.call('INCR', KEYS[2])
return {version, redis.call('HGETALL', KEYS[1])}
"""

# Keep the report built from the newest results version; an older rebuild never overwrites it.
_PUT_REPORT = """
local current = tonumber(redis.call('HGET', KEYS[1], 'v') or '-1')
if tonumber(ARGV[1]) > current then
  redis.call('HSET', KEYS[1], 'v', ARGV[1], 'body', ARGV[2], 'until', ARGV[3], 'stale', ARGV[4])
  return 1
end
return 0
"""

# Replace the key registry in one step, so a request never sees it half written.
_SET_REGISTRY = """
redis.call('DEL', KEYS[1], KEYS[2])
local owners = tonumber(ARGV[1])
for i = 2, 2 * owners, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
for i = 2 * owners + 2, #ARGV do redis.call('SADD', KEYS[2], ARGV[i]) end
return owners
"""


class StoreUnavailable(Exception):
    """Redis did not answer, or holds no registry yet; the caller should retry later."""


@dataclass(frozen=True)
class Claim:
    """An integration this prober holds until `lease_ms`; it was due at `due_ms`."""

    member: str
    due_ms: int
    lease_ms: int


@dataclass(frozen=True)
class StoredReport:
    """A tenant's prebuilt report and the time (epoch seconds) its first result turns stale."""

    tenant_id: str
    body: bytes
    until: float


def connect(url: str, timeout_s: float = 1.0, cluster: bool = False) -> redis.Redis:
    """Return a client with short timeouts and one quick retry (for a pooled socket Redis closed)."""
    options: dict[str, Any] = dict(
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 1),
    )
    if cluster:
        return RedisCluster.from_url(url, **options)  # type: ignore[return-value]
    return redis.Redis.from_url(url, health_check_interval=30, **options)


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _until_arg(until: float) -> str:
    return "inf" if math.isinf(until) else str(_ms(until))


def _until(raw: bytes | None) -> float:
    return math.inf if raw is None or raw == b"inf" else int(raw) / 1000


class Store:
    """Every read and write the service makes, under one key prefix."""

    def __init__(self, client: redis.Redis, prefix: str = "status:") -> None:
        self.client = client
        self.prefix = prefix
        self._claim = client.register_script(_CLAIM)
        self._complete = client.register_script(_COMPLETE)
        self._set_registry = client.register_script(_SET_REGISTRY)

    # -- key names -----------------------------------------------------------------------------
    def due_key(self) -> str:
        """Return the key of the schedule."""
        return f"{self.prefix}{{sched}}:due"

    def probers_key(self) -> str:
        """Return the key of the prober heartbeats."""
        return f"{self.prefix}{{fleet}}:probers"

    def keys_key(self) -> str:
        """Return the key of the API key registry."""
        return f"{self.prefix}{{reg}}:keys"

    def tenants_key(self) -> str:
        """Return the key of the registered tenant ids."""
        return f"{self.prefix}{{reg}}:tenants"

    def config_key(self) -> str:
        """Return the key of the seed marker."""
        return f"{self.prefix}{{reg}}:config"

    def results_key(self, tenant_id: str) -> str:
        """Return the key of a tenant's states."""
        return f"{self.prefix}{{t:{tenant_id}}}:results"

    def version_key(self, tenant_id: str) -> str:
        """Return the key of a tenant's results version."""
        return f"{self.prefix}{{t:{tenant_id}}}:version"

    def report_key(self, tenant_id: str) -> str:
        """Return the key of a tenant's prebuilt report."""
        return f"{self.prefix}{{t:{tenant_id}}}:report"

    # -- guarded calls -------------------------------------------------------------------------
    def _call(self, action: Callable[[], T]) -> T:
        """Run a Redis action, translating every Redis failure into StoreUnavailable."""
        try:
            return action()
        except (redis.RedisError, RedisClusterException) as exc:
            # A server's refusal (NOPERM, WRONGTYPE, ...) says what is wrong; a lost connection does not need to.
            detail = f": {exc}" if isinstance(exc, redis.ResponseError) else ""
            raise StoreUnavailable(f"{exc.__class__.__name__}{detail}") from exc

    # -- web side ------------------------------------------------------------------------------
    def lookup(self, digests: Sequence[str], hint: str | None = None) -> StoredReport | None:
        """Return the report of the tenant owning the first known digest, or None for unknown keys.

        `hint` is the tenant these digests belonged to last time: its report is read in the same
        round trip as the key lookup, and used only if the key still belongs to it.
        """

        def run() -> tuple[bool, list[bytes | None], list[bytes | None] | None]:
            pipe = self.client.pipeline(transaction=False)
            pipe.exists(self.config_key())
            pipe.hmget(self.keys_key(), list(digests))
            if hint is not None:
                pipe.hmget(self.report_key(hint), ["body", "until"])
            replies = pipe.execute()
            return bool(replies[0]), replies[1], replies[2] if hint is not None else None

        seeded, owners, hinted = self._call(run)
        tenant_id = next((o.decode() for o in owners if o is not None), None)
        if tenant_id is None:
            if not seeded:
                raise StoreUnavailable("registry not seeded")
            return None
        if tenant_id != hint or hinted is None:
            hinted = self._call(lambda: self.client.hmget(self.report_key(tenant_id), ["body", "until"]))
        body, until = hinted
        if body is None:
            raise StoreUnavailable("report not built yet")
        return StoredReport(tenant_id, body, _until(until))

    def report_with_stale_times(self, tenant_id: str) -> tuple[bytes, dict[str, float]] | None:
        """Return a tenant's report body and when each of its results turns stale, read together."""
        body, stale = self._call(lambda: self.client.hmget(self.report_key(tenant_id), ["body", "stale"]))
        if body is None:
            return None
        return body, {iid: float(at) for iid, at in json.loads(stale or b"{}").items()}

    def fresh_probers(self, now: float) -> int:
        """Return how many probers have a heartbeat that has not expired."""
        return int(self._call(lambda: self.client.zcount(self.probers_key(), _ms(now), "+inf")))

    # -- prober side ---------------------------------------------------------------------------
    def heartbeat(self, prober_id: str, now: float, fresh_for_s: float) -> None:
        """Record that a prober is alive until now + fresh_for_s; forget long-dead probers."""

        def run() -> None:
            pipe = self.client.pipeline(transaction=False)
            pipe.zadd(self.probers_key(), {prober_id: _ms(now + fresh_for_s)})
            pipe.zremrangebyscore(self.probers_key(), "-inf", _ms(now - 86400))
            pipe.execute()

        self._call(run)

    def forget_prober(self, prober_id: str) -> None:
        """Remove a prober's heartbeat as it exits."""
        self._call(lambda: self.client.zrem(self.probers_key(), prober_id))

    def is_seeded(self) -> bool:
        """Return whether Redis holds a registry (it does not after losing its data)."""
        return bool(self._call(lambda: self.client.exists(self.config_key())))

    def claim(self, now: float, lease_s: float, limit: int) -> list[Claim]:
        """Atomically take up to `limit` due integrations, leased until now + lease_s."""
        if limit <= 0:
            return []
        lease_ms = _ms(now + lease_s)
        flat = self._call(lambda: self._claim(keys=[self.due_key()], args=[_ms(now), lease_ms, limit]))
        return [
            Claim(member=flat[i].decode(), due_ms=int(float(flat[i + 1])), lease_ms=lease_ms)
            for i in range(0, len(flat), 2)
        ]

    def reschedule(self, items: Iterable[tuple[Claim, float]]) -> int:
        """Set each held claim's next due time (epoch seconds); return how many were still ours."""
        args: list[str | int] = []
        for claim, next_due in items:
            args += [claim.member, str(claim.lease_ms), _ms(next_due)]
        if not args:
            return 0
        return int(self._call(lambda: self._complete(keys=[self.due_key()], args=args)))

    def states(self, wanted: Mapping[str, Iterable[str]]) -> dict[str, dict[str, State]]:
        """Return the stored states of the wanted integrations (tenant -> ids), those that have one."""
        asked = {tenant_id: list(ids) for tenant_id, ids in wanted.items()}

        def run() -> list[list[bytes | None]]:
            pipe = self.client.pipeline(transaction=False)
            for tenant_id, ids in asked.items():
                pipe.hmget(self.results_key(tenant_id), ids)
            return pipe.execute()

        return {
            tenant_id: {iid: State.from_json(json.loads(raw)) for iid, raw in zip(ids, replies) if raw is not None}
            for (tenant_id, ids), replies in zip(asked.items(), self._call(run))
        }

    def record(self, updates: Mapping[str, Mapping[str, State]]) -> dict[str, tuple[int, dict[str, State]]]:
        """Write new states per tenant (none is fine); return each tenant's new version and full states."""
        tenant_ids = list(updates)

        def run() -> list[list[Any]]:
            # Plain EVAL, not a registered script: a cluster pipeline cannot load scripts beforehand.
            pipe = self.client.pipeline(transaction=False)
            for tenant_id in tenant_ids:
                args = [x for iid, s in updates[tenant_id].items() for x in (iid, json.dumps(s.to_json()))]
                pipe.execute_command("EVAL", _RECORD, 2, self.results_key(tenant_id), self.version_key(tenant_id), *args)
            return pipe.execute()

        replies = self._call(run) if tenant_ids else []
        out = {}
        for tenant_id, (version, flat) in zip(tenant_ids, replies):
            out[tenant_id] = (int(version), _decode_states(dict(zip(flat[::2], flat[1::2]))))
        return out

    def put_reports(self, reports: Iterable[tuple[str, int, bytes, Mapping[str, float], float]]) -> None:
        """Store prebuilt reports (tenant, results version, body, stale time per id, next stale time)."""

        def run() -> None:
            pipe = self.client.pipeline(transaction=False)  # plain EVAL, as in record()
            for tenant_id, version, body, stale, until in reports:
                pipe.execute_command(
                    "EVAL", _PUT_REPORT, 1, self.report_key(tenant_id), version, body, _until_arg(until), json.dumps(stale)
                )
            pipe.execute()

        self._call(run)

    def seed(
        self,
        fingerprint: str,
        owners: Mapping[str, str],
        tenant_ids: Sequence[str],
        members: Mapping[str, float],
    ) -> list[str]:
        """Make Redis match a registry and return the members removed.

        `owners` maps key digests to tenants; `members` maps every integration's schedule name to
        its first due time. New members are added with that time, existing ones keep theirs, and
        members and tenants no longer registered are removed with their keys.
        """

        def run() -> list[str]:
            known = {m.decode() for m in self.client.zrange(self.due_key(), 0, -1)}
            gone_tenants = {t.decode() for t in self.client.smembers(self.tenants_key())} - set(tenant_ids)
            removed = sorted(known - members.keys())
            self._set_registry(
                keys=[self.keys_key(), self.tenants_key()],
                args=[len(owners), *[x for pair in owners.items() for x in pair], *tenant_ids],
            )
            pipe = self.client.pipeline(transaction=False)
            if members:
                pipe.zadd(self.due_key(), {m: _ms(t) for m, t in members.items()}, nx=True)
            if removed:
                pipe.zrem(self.due_key(), *removed)
            for tenant_id in gone_tenants:
                pipe.delete(self.results_key(tenant_id))
                pipe.delete(self.version_key(tenant_id))
                pipe.delete(self.report_key(tenant_id))
            for member in removed:
                tenant_id, integration_id = split_member(member)
                pipe.hdel(self.results_key(tenant_id), integration_id)
            pipe.execute()
            self.client.set(self.config_key(), fingerprint)  # last: its presence means the seed is complete
            return removed

        return self._call(run)


def _decode_states(raw: Mapping[bytes, bytes]) -> dict[str, State]:
    return {k.decode(): State.from_json(json.loads(v)) for k, v in raw.items()}
