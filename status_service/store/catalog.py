"""Integrations made through the admin API: their definitions, the change feeds probers follow, and their edits.

Layout (P is the prefix), besides the package's docstring:
  P{t:ID}:integrations  hash    integration id -> JSON {type, probe (encrypted), rev, order, created_at, updated_at}
  P{t:ID}:changes       stream  {i: ID} per change of one of the tenant's integrations (MAXLEN ~ 1000)
  P{t:ID}:registry      str     api:INC:REV: REV is the id of the tenant's last change entry ("0" before any)
  P{reg}:feed           stream  {t: TENANT} per change of an admin API tenant (MAXLEN ~ 100,000)
A change is one script in the tenant's slot: the definition, its results reset, the change entry,
the registry's REV and the report edited, so a reader sees all of it or none. The feed entry and the
audit entry follow, in the {reg} slot; probers also re-read every tenant's REV each minute, so a
feed entry lost to a crash between the two delays a change by a minute, never for good.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from ..model import schedule_member, split_member
from . import Store, _text
from . import _HISTORY_LUA
from .admin import _AUDIT, AUDIT_RETENTION_S

TENANT_CHANGES_KEPT = 1000  # a prober further behind than this on one tenant reads all of it again
RECHECK_KEPT_S = 3600  # how long a change made due once is remembered, so no other prober makes it due again
_DUE_ONCE = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""
FEED_KEPT = 100_000  # a prober further behind than this on the feed re-reads every tenant's REV

# The tenant's report with one row replaced in place, added at the end, or (no new row) removed, as
# report.build_report would give it (but for the order of the per-type stats: JSON objects have none).
# The rows are spliced as bytes and only the counts rebuilt, so an edit of a report of 10,000 rows
# costs a copy of it in Redis. Types of the admin API's integrations hold no '"' or '\\' (see schemas.py).
_EDIT_REPORT = """
local function percentage(h, t)
  if t == 0 then return '100.0' end
  local cents = math.floor((20000 * h + t) / (2 * t))  -- 100 * h / t rounded half up to hundredths, exactly
  local whole, part = math.floor(cents / 100), cents % 100
  if part == 0 then return string.format('%d.0', whole) end
  if part % 10 == 0 then return string.format('%d.%d', whole, part / 10) end
  return string.format('%d.%02d', whole, part)
end
local function overall(h, t)
  if h == t then return 'ok' elseif h == 0 then return 'unhealthy' end
  return 'degraded'
end
local function edit_report(body, iid, new_row, new_type, generated_at)
  local from = select(2, string.find(body, '"integrations":[', 1, true)) + 1
  local to = string.find(body, '],"healthy_integrations_count":', from, true)  -- a '"' after ',' is no string's
  local rows, tail = string.sub(body, from, to - 1), string.sub(body, to)
  local kinds, counts = {}, {}
  for kind, total, healthy in string.gmatch(tail, '"([^"]*)":{"total_count":(%d+),"healthy_count":(%d+),') do
    kinds[#kinds + 1] = kind
    counts[kind] = {tonumber(healthy), tonumber(total)}
  end
  local at = string.find(rows, '{"id":"' .. iid .. '","status":"', 1, true)
  if at then
    local stop = string.find(rows, '},{"id":"', at, true) or #rows
    local old = string.sub(rows, at, stop)
    local status, kind = string.match(old, '"status":"(%a+)","type":"([^"]*)"')
    if status ~= 'maintenance' then  -- a row in a maintenance window is in no count
      counts[kind][2] = counts[kind][2] - 1
      if status == 'healthy' then counts[kind][1] = counts[kind][1] - 1 end
    end
    local before, after = string.sub(rows, 1, at - 1), string.sub(rows, stop + 1)
    if new_row ~= '' then
      rows = before .. new_row .. after
    elseif after ~= '' then
      rows = before .. string.sub(after, 2)
    else
      rows = string.sub(before, 1, -2)
    end
  elseif new_row ~= '' then
    rows = rows == '' and new_row or rows .. ',' .. new_row
  end
  if new_row ~= '' then
    if not counts[new_type] then kinds[#kinds + 1] = new_type; counts[new_type] = {0, 0} end
    counts[new_type][2] = counts[new_type][2] + 1  -- a new row is unknown, not healthy
  end
  local stats, healthy, total = {}, 0, 0
  for _, kind in ipairs(kinds) do
    local h, t = counts[kind][1], counts[kind][2]
    if t > 0 then
      healthy, total = healthy + h, total + t
      stats[#stats + 1] = string.format('"%s":{"total_count":%d,"healthy_count":%d,"healthy_percentage":%s,"status":"%s"}',
                                        kind, t, h, percentage(h, t), overall(h, t))
    end
  end
  return string.format('{"status":"%s","data":{"integrations":[', overall(healthy, total)) .. rows ..
    string.format('],"healthy_integrations_count":%d,"total_integrations_count":%d,"healthy_percentage":%s,' ..
                  '"stats_by_integration_type":{%s},"generated_at":"%s"}}',
                  healthy, total, percentage(healthy, total), table.concat(stats, ','), generated_at)
end
"""

# Put (ARGV[2] a definition, ARGV[3] its row: unknown, not checked yet) or remove (both empty) one
# integration of an admin API tenant, and edit its report to match, in one step: no prober or other
# call can come in between, so two racing calls lose no update. Returns 'missing' (no such admin API
# tenant), 'full', 'absent' (nothing to remove), or {created, rev}.
_CHANGE = _EDIT_REPORT + _HISTORY_LUA + """
local seeded = redis.call('GET', KEYS[1])
if not seeded or string.sub(seeded, 1, 4) ~= 'api:' then return 'missing' end
local old = redis.call('HGET', KEYS[2], ARGV[1])
if ARGV[2] == '' and not old then return 'absent' end
if ARGV[2] ~= '' and not old and redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[5]) then return 'full' end
local rev = redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[8], '*', 'i', ARGV[1])
local new_type = ''
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[2], ARGV[1])
  drop_history(ARGV[1])  -- a removed integration leaves no data behind
else
  local def = cjson.decode(ARGV[2])
  new_type = def['type']
  def['rev'] = rev
  def['order'] = rev
  if old then
    old = cjson.decode(old)
    def['order'], def['created_at'] = old['order'], old['created_at']  -- a replaced one keeps its place
  end
  redis.call('HSET', KEYS[2], ARGV[1], cjson.encode(def))
end
redis.call('HDEL', KEYS[3], ARGV[1])  -- a changed integration starts over: unknown, not checked yet
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('SET', KEYS[1], string.match(seeded, '^(api:[^:]*:)') .. rev)
local report = redis.call('HMGET', KEYS[6], 'v', 'body')
if report[2] then  -- none only if a crash cut the tenant's creation short: its probers write one
  local version = redis.call('INCR', KEYS[5])
  if version <= tonumber(report[1]) then  -- the report made with the tenant came before any results version
    version = tonumber(report[1]) + 1
    redis.call('SET', KEYS[5], version)
  end
  local body = edit_report(report[2], ARGV[1], ARGV[3], new_type, ARGV[4])
  redis.call('HSET', KEYS[6], 'v', version, 'body', body, 'e', string.sub(redis.sha1hex(body), 1, 20))  -- as report.etag
  redis.call('HDEL', KEYS[6], 'c')  -- the counts of /metrics: taken from the body until a prober writes them
  redis.call('PUBLISH', ARGV[6], 'r ' .. ARGV[7] .. ' ' .. version)
end
if old then return {0, rev} end
return {1, rev}
"""

_UNSCHEDULE = """
if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1])) == tonumber(ARGV[2]) then redis.call('ZREM', KEYS[1], ARGV[1]) end
"""

_NOTE = _AUDIT + """
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[7], '*', 't', ARGV[1])
audit(KEYS[2], ARGV[6], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
"""


def _id_after(a: str, b: str) -> bool:
    """Return whether stream id a comes after stream id b."""
    return tuple(map(int, a.split("-"))) > tuple(map(int, (b if "-" in b else b + "-0").split("-")))


# What a prober needs to bring its copy of a tenant up to date: 'gone', or the registry value and
# either every definition ('full') or those changed since the caller's rev ('delta'), read atomically.
_READ = """
local seeded = redis.call('GET', KEYS[1])
if not seeded or string.sub(seeded, 1, 4) ~= 'api:' then return {'gone'} end
local inc, rev = string.match(seeded, '^api:([^:]*):(.*)$')
if rev == ARGV[2] and inc == ARGV[1] then return {'same', seeded} end
local full = inc ~= ARGV[1] or ARGV[2] == ''
local entries = {}
if not full then
  local first = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)[1]
  local a, b = string.match(ARGV[2], '^(%d+)-(%d+)$')
  if first and a then
    local c, d = string.match(first[1], '^(%d+)-(%d+)$')
    -- Entries after the caller's may have been trimmed: unless its own is still there, read it all.
    if tonumber(c) > tonumber(a) or (tonumber(c) == tonumber(a) and tonumber(d) > tonumber(b)) then full = true end
  elseif first then
    full = true
  end
  if not full then entries = redis.call('XRANGE', KEYS[3], '(' .. ARGV[2], '+') end
end
if full then
  local out = {'full', seeded}
  for _, v in ipairs(redis.call('HGETALL', KEYS[2])) do out[#out + 1] = v end
  return out
end
local out, seen = {'delta', seeded}, {}
for _, entry in ipairs(entries) do
  local iid = entry[2][2]
  if not seen[iid] then
    seen[iid] = true
    out[#out + 1] = iid
    out[#out + 1] = redis.call('HGET', KEYS[2], iid) or ''
  end
end
return out
"""


@dataclass(frozen=True)
class Snapshot:
    """What an edit starts from: the tenant's registry value, the integration's definition and schedule score."""

    seeded: str | None
    due: float | None  # the integration's score in the schedule, None if it is not there
    definition: dict[str, Any] | None


@dataclass(frozen=True)
class TenantChange:
    """A tenant's integrations as a prober must now see them.

    kind: "gone" (no such admin API tenant any more), "same" (nothing new), "full" (`definitions`
    holds all of them) or "delta" (those changed since the caller's rev; None for removed ones).
    """

    kind: str
    incarnation: str = ""
    rev: str = ""
    definitions: Mapping[str, dict[str, Any] | None] | None = None


class Catalog:
    """Reads and atomic edits of the admin API's integrations, on a Store's client."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- the admin API's side ------------------------------------------------------------------
    def snapshot(self, tenant_id: str, integration_id: str) -> Snapshot:
        """Read an integration's tenant registry value, definition and place in the schedule, in one round trip."""
        s = self.store

        def run() -> list[Any]:
            pipe = s.client.pipeline(transaction=False)
            pipe.get(s.registry_key(tenant_id))
            pipe.hget(s.integrations_key(tenant_id), integration_id)
            pipe.zscore(s.due_key(), schedule_member(tenant_id, integration_id))
            return pipe.execute()

        seeded, raw, due = s._call(run)
        return Snapshot(seeded=_text(seeded) if seeded is not None else None, due=due,
                        definition=json.loads(raw) if raw is not None else None)

    def change(
        self, tenant_id: str, integration_id: str, definition: dict[str, Any] | None, row: bytes, generated_at: str,
        max_integrations: int = 0,
    ) -> str | tuple[bool, str]:
        """Put (or, with no definition, remove) an integration and edit the report to match; see _CHANGE."""
        s = self.store
        keys = [s.registry_key(tenant_id), s.integrations_key(tenant_id), s.results_key(tenant_id), s.changed_key(tenant_id),
                s.version_key(tenant_id), s.report_key(tenant_id), s.tenant_changes_key(tenant_id)]
        args = [integration_id, json.dumps(definition) if definition else "", row, generated_at, max_integrations,
                s.channel, tenant_id, TENANT_CHANGES_KEPT]
        reply = s._call(lambda: s._script(_CHANGE, keys, args))
        if isinstance(reply, bytes):
            return reply.decode()
        return bool(reply[0]), _text(reply[1])

    def note(self, tenant_id: str, admin: str, action: str, obj: str, at: str) -> None:
        """Tell probers the tenant changed (the feed), and record who changed what (the audit stream)."""
        s = self.store
        keys = [s.feed_key(), f"{s.prefix}{{reg}}:audit"]
        args = [tenant_id, admin, action, obj, at, AUDIT_RETENTION_S * 1000, FEED_KEPT]
        s._call(lambda: s._script(_NOTE, keys, args))

    def announce(self, tenant_id: str) -> None:
        """Tell probers the tenant changed (a deletion, whose audit entry is written with it)."""
        self.store._call(lambda: self.store.client.xadd(self.store.feed_key(), {"t": tenant_id}, maxlen=FEED_KEPT, approximate=True))

    def make_due(self, member: str) -> None:
        """Make a member due at once, with a score no other write gives it (see unschedule_if)."""
        self.store._call(lambda: self.store.client.zadd(self.store.due_key(), {member: -random.random()}))

    def make_due_once(self, member: str, change: str) -> bool:
        """Make a member due at once for a change (a digest naming it), once for the whole fleet; return whether this call did.

        The marker and the schedule share a slot, so both are written in one step: a lost reply or
        a failure cannot leave the change marked done but not made due.
        """
        keys = [f"{self.store.prefix}{{sched}}:recheck:{change}", self.store.due_key()]
        return bool(self.store._call(lambda: self.store._script(_DUE_ONCE, keys, [member, -random.random(), RECHECK_KEPT_S])))

    def unschedule_if(self, member: str, due: float) -> None:
        """Take a member out of the schedule if its score is still `due`: a racing put or claim has changed it."""
        self.store._call(lambda: self.store._script(_UNSCHEDULE, [self.store.due_key()], [member, repr(due)]))

    def orphans(self, members: list[str]) -> set[str]:
        """Return the members that nothing defines: no seeded config file tenant, no admin API integration."""
        s = self.store

        def run() -> list[Any]:
            pipe = s.client.pipeline(transaction=False)
            for member in members:
                tenant_id, integration_id = split_member(member)
                pipe.sismember(s.tenants_key(), tenant_id)
                pipe.hexists(s.api_tenants_key(), tenant_id)
                pipe.hexists(s.integrations_key(tenant_id), integration_id)
            return pipe.execute()

        found = s._call(run) if members else []
        return {m for n, m in enumerate(members) if not found[3 * n] and not (found[3 * n + 1] and found[3 * n + 2])}

    def forget(self, held: Iterable[tuple[str, int]]) -> None:
        """Take claimed members (member, lease held) out of the schedule, unless put or claimed again since."""
        for member, lease_ms in held:
            self.unschedule_if(member, float(lease_ms))

    def schedule_missing(self, members: Iterable[str]) -> None:
        """Make due at once the members the schedule lacks (a crash between two steps of a put, say)."""
        mapping = {m: 0 for m in members}
        if mapping:
            self.store._call(lambda: self.store.client.zadd(self.store.due_key(), mapping, nx=True))

    def due(self, members: Iterable[str]) -> dict[str, float | None]:
        """Return each member's score in the schedule (None if it is not there)."""
        members = list(members)
        if not members:
            return {}
        return dict(zip(members, self.store._call(lambda: self.store.client.zmscore(self.store.due_key(), members))))

    def settings(self) -> dict[str, Any]:
        """Return the admin API's settings as the config file last seeded set them ({} before a seed)."""
        raw = self.store._call(lambda: self.store.client.get(self.store.settings_key()))
        return json.loads(raw) if raw else {}

    def ids(self, tenant_id: str) -> list[str]:
        """Return the ids of a tenant's integrations, sorted."""
        return sorted(_text(i) for i in self.store._call(lambda: self.store.client.hkeys(self.store.integrations_key(tenant_id))))

    def definitions(self, tenant_id: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        """Return the stored definitions of these integrations, those that exist."""
        if not ids:
            return {}
        raw = self.store._call(lambda: self.store.client.hmget(self.store.integrations_key(tenant_id), ids))
        return {i: json.loads(r) for i, r in zip(ids, raw) if r is not None}

    # -- the probers' side ---------------------------------------------------------------------
    def tenant_ids(self) -> list[str]:
        """Return the ids of every tenant made through the admin API."""
        return [_text(t) for t in self.store._call(lambda: self.store.client.hkeys(self.store.api_tenants_key()))]

    def feed_end(self) -> str:
        """Return the id of the feed's last entry ("0-0" if it has none): a follower starts after it."""
        last = self.store._call(lambda: self.store.client.xrevrange(self.store.feed_key(), "+", "-", count=1))
        return _text(last[0][0]) if last else "0-0"

    def read_feed(self, after: str, count: int = 10_000) -> tuple[list[str], str, bool]:
        """Return the tenants named after `after`, the new position, and whether entries may have been missed.

        Missed: the feed no longer holds the entry `after` names (it was trimmed, or Redis lost it).
        """
        s = self.store

        def run() -> list[Any]:
            pipe = s.client.pipeline(transaction=False)
            pipe.xrange(s.feed_key(), "-", "+", count=1)
            pipe.xrange(s.feed_key(), f"({after}", "+", count=count)
            return pipe.execute()

        first, entries = s._call(run)
        missed = after != "0-0" and (not first or _id_after(_text(first[0][0]), after))
        tenants = list(dict.fromkeys(_text(fields[b"t"]) for _, fields in entries))
        return tenants, (_text(entries[-1][0]) if entries else after), missed

    def read(self, known: Mapping[str, tuple[str, str]]) -> dict[str, TenantChange]:
        """Return what changed of each tenant since the (incarnation, rev) the caller holds ("" , "" for none)."""
        s = self.store
        ids = list(known)

        def run() -> list[Any]:
            pipe = s.client.pipeline(transaction=False)  # plain EVAL, as in Store.record()
            pipe.hmget(s.api_tenants_key(), ids)
            for tenant_id in ids:
                keys = [s.registry_key(tenant_id), s.integrations_key(tenant_id), s.tenant_changes_key(tenant_id)]
                pipe.execute_command("EVAL", _READ, len(keys), *keys, *known[tenant_id])
            return pipe.execute()

        if not ids:
            return {}
        made, *replies = s._call(run)
        # A tenant no longer made (a deletion that a crash left halfway) is gone, whatever its data says.
        return {tenant_id: _change(reply) if exists is not None else TenantChange("gone")
                for tenant_id, exists, reply in zip(ids, made, replies)}


def _change(reply: list[Any]) -> TenantChange:
    kind = _text(reply[0])
    if kind == "gone":
        return TenantChange("gone")
    _, incarnation, rev = _text(reply[1]).split(":", 2)
    flat = reply[2:]
    definitions = {_text(k): (json.loads(v) if v else None) for k, v in zip(flat[::2], flat[1::2])}
    return TenantChange(kind, incarnation, rev, definitions)
