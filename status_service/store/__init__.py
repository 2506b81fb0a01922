"""The only package that speaks Redis: key names, reads, writes and Lua scripts (the admin API's in admin.py).

Key layout (P is the configurable prefix). Each tenant's keys share one hash tag, and so do the
schedule's and the registry's. Every multi-key command and script stays within one hash tag, so
the layout works on Redis Cluster; atomic steps are Lua scripts, never MULTI across tags.
  P{sched}:due        zset  integration member -> due time (ms); a claim pushes it to its lease end
  P{sched}:fence      str   the last fencing token handed out with a claim
  P{sched}:claim:RID  str   a claim's reply, kept while a retry may come (>= 10 s, PX)
  P{sched}:file       str   the generation of the config file whose seed last wrote the schedule
  P{fleet}:probers    zset  prober id -> heartbeat expiry (ms)
  P{reg}:keys         hash  API key SHA-256 digest -> tenant id
  P{reg}:tenants      set   registered tenant ids
  P{reg}:config       str   fingerprint of the config last seeded (absent: Redis lost its data)
  P{reg}:file         str   the generation of the config file last seeded; an older one is refused
  P{reg}:file:keys    str   JSON list of the key digests the config file declared (the rest are the API's)
  P{reg}:admins       hash  admin API key digest (from the config file) -> admin key id
  P{reg}:generation   str   counter bumped with every key registry change
  P{reg}:settings     str   JSON of the admin API's settings from the config file last seeded
  P{reg}:feed         stream  one entry {t: TENANT} per change of a tenant made through the admin API
  P{t:ID}:results     hash  integration id -> state JSON
  P{t:ID}:version     str   counter bumped with every results write
  P{t:ID}:changed     zset  integration id -> the version at which its state last changed
  P{t:ID}:incarnation str   a random id of the tenant's history, made anew when Redis lost it
  P{t:ID}:registry    str   GEN:PRINT, the fingerprint of the tenant's integrations as last seeded and the
                            file generation that seeded it: a prober whose registry differs writes neither
                            results nor report. api:INC:REV for a tenant made through the admin API: its
                            incarnation and the rev of its last integration change; a prober that has not
                            applied that change writes no report, and no result of an integration it changed
  P{t:ID}:report      hash  body (prebuilt JSON), v (results version it was built from),
                            until (ms when its first result turns stale), stale (JSON: id -> stale time),
                            e (the body's entity tag, report.etag: a conditional GET reads it, not the body),
                            c (JSON: type -> status -> integrations, for /metrics; absent: count the body)
  P{t:ID}:integrations hash integration id -> JSON definition, probe encrypted (admin API tenants)
  P{t:ID}:changes     stream  one entry {i: ID} per integration change; its id is the change's rev
  P{t:ID}:webhooks, outbox, outbox:*, dead, dead:at   webhooks and their deliveries (store/webhooks.py)
  P{t:ID}:maintenance hash  the tenant's maintenance windows (store/maintenance.py)
  P{t:ID}:badges      hash  the tenant's badge tokens (store/badges.py)
  P{t:ID}:checks:*, r300:*, ..., events        history (store/history.py); history:keys lists the keys of
                            both whose names vary (checks:<id>, outbox:<webhook>...), for a tenant's removal
Every key's size is bounded by the registry (one entry per tenant, key or integration), or trimmed.
Channel Pchanges: "r <tenant> <version>" when a report is replaced, "k" when the key registry is.
"""
from __future__ import annotations

import json
import math
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from ..model import State, split_member
from ..report import etag

T = TypeVar("T")

CLAIM_REPLY_MS = 10_000  # the least time a claim's reply is kept for a retry of the same call

# Claim what is due: push each due member to its lease end, so a dead claimant's work comes back.
# Times come from Redis TIME unless the caller passes one (tests drive a clock by hand), so every
# prober agrees on them. Each claim gets a fencing token, larger than every earlier one: a result
# carries it, and a result with a lower token never overwrites one with a higher token. The reply is
# kept under the request's id while a retry may come (10 s, or longer with a longer client timeout),
# so a retried call returns it instead of claiming again.
_CLAIM = """
local done = redis.call('GET', KEYS[3])
if done then return cjson.decode(done) end
local now = tonumber(ARGV[1])
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local lease = now + tonumber(ARGV[2])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[3]))
local n = #due / 2
local top = redis.call('INCRBY', KEYS[2], n)
if top < now * 1000 then
  -- Tokens follow the clock too, so a counter lost with its node still only grows.
  top = now * 1000 + n
  redis.call('SET', KEYS[2], string.format('%d', top))
end
local out = {string.format('%d', now), string.format('%d', lease)}
for i = 1, n do
  redis.call('ZADD', KEYS[1], lease, due[2 * i - 1])
  out[#out + 1] = due[2 * i - 1]
  out[#out + 1] = due[2 * i]
  out[#out + 1] = string.format('%d', top - n + i)
end
redis.call('SET', KEYS[3], cjson.encode(out), 'PX', tonumber(ARGV[4]))
return out
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

# Push held claims' leases further out (ARGV: member, lease held, new lease); a member removed or
# re-claimed meanwhile is left alone. Returns the members extended.
_EXTEND = """
local kept = {}
for i = 1, #ARGV, 3 do
  if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[i])) == tonumber(ARGV[i + 1]) then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[i + 2], ARGV[i])
    kept[#kept + 1] = ARGV[i]
  end
end
return kept
"""

# Append an event ("<ms> <json>") to a tenant's stream under an id that only grows and reads as its
# time in ms: the event's own, or one past the newest id when that is not later.
_EVENT_LUA = """
local function add_event(base, events_min, text)
  local ms = tonumber(string.match(text, '^(%d+)'))
  local last = redis.call('GET', base .. 'events:last')
  local id = string.format('%d-0', ms)
  if last then
    local lms, lseq = string.match(last, '^(%d+)-(%d+)$')
    if ms <= tonumber(lms) then id = lms .. '-' .. string.format('%d', tonumber(lseq) + 1) end
  end
  local made = redis.pcall('XADD', base .. 'events', 'MINID', '~', events_min, id, 'e', text)
  if type(made) == 'table' and made.err then  -- the stream is ahead of its marker (restored apart): let Redis pick
    made = redis.call('XADD', base .. 'events', 'MINID', '~', events_min, '*', 'e', text)
  end
  redis.call('SET', base .. 'events:last', made)
end
"""


# Lua helpers for a script whose KEYS[1] is a tenant's registry key: the tenant's key prefix, and the
# removal of history (see store/history.py) with an integration (an id) or with the whole tenant (nil).
_HISTORY_LUA = """
local function tenant_base() return string.sub(KEYS[1], 1, #KEYS[1] - #'registry') end
local function drop_history(id)
  local base = tenant_base()
  if id then
    for _, name in ipairs({'checks:' .. id, 'r300:' .. id, 'r3600:' .. id}) do
      redis.call('DEL', base .. name)
      redis.call('SREM', base .. 'history:keys', name)
    end
    return
  end
  for _, name in ipairs(redis.call('SMEMBERS', base .. 'history:keys')) do redis.call('DEL', base .. name) end
  redis.call('DEL', base .. 'history:keys', base .. 'events', base .. 'events:last', base .. 'history:cursor',
             base .. 'history:late', base .. 'history:lock', base .. 'history:began', base .. 'history:folding')
end
"""


# Write states under their fences, bump the version if anything was written, and return every state
# changed since the caller's version (all of them if the caller has none, or Redis lost its data
# since): a caller that keeps the tenant's states gets a consistent copy one write at a time.
# Each write names the fence of the state it was computed from; if another prober wrote meanwhile,
# the write is a conflict and the caller recomputes. A state whose fence is not above the stored one
# is dropped, so a retried call writes nothing twice and a prober whose claim was taken over cannot
# overwrite a newer result. No writes at all asks for a rebuild, which needs a new version too. A
# caller whose registry of the tenant is not the one last seeded writes nothing ({-1}): it would
# bring back an integration that was removed while it was probing it. For a tenant of the admin API,
# a state whose integration was removed or changed (its definition's rev is not the caller's) is dropped.
# With each state written goes its history, in the same step, so a check is kept exactly once: the raw
# check (ARGV[i + 5]) on the integration's stream, and the event of a transition (ARGV[i + 6]) on the
# tenant's, under an id that only grows and reads as the transition's time in ms (see store/history.py).
_RECORD = _EVENT_LUA + """
local seeded = redis.call('GET', KEYS[5])
if not seeded then return {-2} end  -- lost (with its shard, say): the tenant must be seeded again
-- A tenant of the admin API is fenced integration by integration (below), so its changes hold up no other result.
local api = string.sub(seeded, 1, 4) == 'api:'
if not api and string.match(seeded, '([^:]*)$') ~= ARGV[4] then return {-1} end  -- the caller's registry is not the seeded one
local known = tonumber(ARGV[1])
local before = tonumber(redis.call('GET', KEYS[2]) or '0')
local incarnation = redis.call('GET', KEYS[4])
if not incarnation then
  incarnation = ARGV[3]  -- a tenant's history begins (again, if Redis lost it): versions restart
  redis.call('SET', KEYS[4], incarnation)
end
if incarnation ~= ARGV[2] then known = -1 end
local conflicts, dropped, written, outdated = {}, {}, {}, {}
local base, raw_min, events_min = ARGV[5], ARGV[6], ARGV[7]
for i = 8, #ARGV, 7 do
  local stored = redis.call('HGET', KEYS[1], ARGV[i])
  local fence = 0
  if stored then fence = tonumber(cjson.decode(stored)['fence'] or 0) end
  local defined = not api or redis.call('HGET', KEYS[6], ARGV[i])
  if defined and api then defined = cjson.decode(defined)['rev'] == ARGV[i + 4] end
  if not defined then  -- removed or changed since it was claimed
    dropped[#dropped + 1] = ARGV[i]
    outdated[#outdated + 1] = ARGV[i]
  elseif tonumber(ARGV[i + 1]) <= fence then
    dropped[#dropped + 1] = ARGV[i]
  elseif fence ~= tonumber(ARGV[i + 2]) then
    conflicts[#conflicts + 1] = ARGV[i]
  else
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 3])
    written[#written + 1] = ARGV[i]
    if ARGV[i + 5] ~= '' then
      -- Under an id that is the check's time in ms (one past the newest if not later), so the id says when.
      local stream = base .. 'checks:' .. ARGV[i]
      local ms, check = string.match(ARGV[i + 5], '^(%d+)|(.*)$')
      local at = tonumber(ms)
      local id = ms .. '-0'
      local newest = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
      if newest then
        local lms, lseq = string.match(newest[1], '^(%d+)-(%d+)$')
        if at <= tonumber(lms) then id = lms .. '-' .. string.format('%d', tonumber(lseq) + 1) end
      end
      local made = redis.pcall('XADD', stream, 'MINID', '~', raw_min, id, 'c', check)
      if type(made) == 'table' and made.err then redis.call('XADD', stream, 'MINID', '~', raw_min, '*', 'c', check) end
      if not newest then redis.call('SADD', base .. 'history:keys', 'checks:' .. ARGV[i]) end  -- a new stream
      -- Behind the rollups, or inside the stretch a compaction is folding from checks it read already:
      -- the mark makes that compaction's write refused and the next one go back for it.
      local folded = math.max(tonumber(redis.call('GET', base .. 'history:cursor') or '0'),
                              tonumber(redis.call('GET', base .. 'history:folding') or '0'))
      local late = tonumber(redis.call('GET', base .. 'history:late') or '-1')
      if at < folded and (late < 0 or at < late) then
        redis.call('SET', base .. 'history:late', string.format('%d', at))
      end
    end
    if ARGV[i + 6] ~= '' then add_event(base, events_min, ARGV[i + 6]) end
  end
end
local version = before
if #written > 0 or #ARGV == 7 then
  version = redis.call('INCR', KEYS[2])
  for _, id in ipairs(written) do redis.call('ZADD', KEYS[3], version, id) end
end
if known < 0 or known > before then
  return {version, conflicts, dropped, 1, redis.call('HGETALL', KEYS[1]), incarnation, outdated}
end
local changed = {}
local ids = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. known, '+inf')
for _, id in ipairs(conflicts) do ids[#ids + 1] = id end  -- so the caller can recompute them
for _, id in ipairs(ids) do
  local state = redis.call('HGET', KEYS[1], id)
  if state then
    changed[#changed + 1] = id
    changed[#changed + 1] = state
  end
end
return {version, conflicts, dropped, 0, changed, incarnation, outdated}
"""

# Keep the report built from the newest results version and the seeded registry; an older rebuild,
# or one by a prober that has not reloaded yet, never overwrites it. The overall and per-type statuses
# it says (ARGV[8], JSON) are compared with the report's it replaces: each one that changed is an
# event (at ARGV[9] ms, kept from ARGV[10] ms; ARGV[8] empty: history is off), once, however many write.
_PUT_REPORT = _EVENT_LUA + """
if string.match(redis.call('GET', KEYS[2]) or '', '([^:]*)$') ~= ARGV[7] then return 0 end  -- another registry's
local current = tonumber(redis.call('HGET', KEYS[1], 'v') or '-1')
if tonumber(ARGV[1]) > current then
  local said = redis.call('HGET', KEYS[1], 's')
  redis.call('HSET', KEYS[1], 'v', ARGV[1], 'body', ARGV[2], 'until', ARGV[3], 'stale', ARGV[4], 'e', ARGV[11])
  if ARGV[12] ~= '' then redis.call('HSET', KEYS[1], 'c', ARGV[12]) else redis.call('HDEL', KEYS[1], 'c') end
  redis.call('PUBLISH', ARGV[5], 'r ' .. ARGV[6] .. ' ' .. ARGV[1])  -- web workers drop their copy
  if ARGV[8] ~= '' then
    redis.call('HSET', KEYS[1], 's', ARGV[8])
    if said then
      local old, new, scopes = cjson.decode(said), cjson.decode(ARGV[8]), {}
      for scope in pairs(new) do scopes[#scopes + 1] = scope end
      -- A maintenance window is 'active' while open and absent otherwise: its opening and its closing are events.
      for scope in pairs(old) do
        if string.sub(scope, 1, 12) == 'maintenance:' and not new[scope] then scopes[#scopes + 1] = scope end
      end
      table.sort(scopes)  -- the overall status ('') first, then windows, then types: one order for every writer
      local base = string.sub(KEYS[2], 1, #KEYS[2] - #'registry')
      for _, scope in ipairs(scopes) do
        local was, is = old[scope], new[scope]
        local window = string.sub(scope, 1, 12) == 'maintenance:'
        if window then was, is = was or 'inactive', is or 'inactive' end
        if was and was ~= is then  -- a type that appears or goes is no transition
          local body = {scope = 'status', integration = cjson.null, previous = was, current = is, reason = cjson.null}
          if window then
            body['scope'], body['maintenance'] = 'maintenance', string.sub(scope, 13)
          elseif scope ~= '' then
            body['scope'], body['type'] = 'type', string.sub(scope, 6)
          end
          add_event(base, ARGV[10], ARGV[9] .. ' ' .. cjson.encode(body))
        end
      end
    end
  end
  return 1
end
return 0
"""

# Replace the config file's part of the key registry in one step, so a request never sees it half
# written, unless a newer config file has been seeded: a prober started from an older file never
# brings back a revoked key. Keys made through the admin API are left alone, but for those of tenants
# the file no longer declares (KEYS[9...]). The admin API's settings go with it. Returns the generation that stands in the way,
# "conflict:ID" if the file declares a tenant made through the API, or -1 once the keys are written.
_SET_REGISTRY = """
local newest = tonumber(redis.call('GET', KEYS[4]) or '-1')
if newest > tonumber(ARGV[1]) then return newest end
local tenants_at = 3 + 2 * tonumber(ARGV[2])
tenants_at = tenants_at + 1 + 2 * tonumber(ARGV[tenants_at])
for i = tenants_at + 1, tenants_at + tonumber(ARGV[tenants_at]) do
  if redis.call('HEXISTS', KEYS[7], ARGV[i]) == 1 then return 'conflict:' .. ARGV[i] end  -- the API's tenant
end
redis.call('SET', KEYS[4], ARGV[1])
redis.call('SET', KEYS[8], ARGV[#ARGV - 1])
for i = 9, #KEYS do  -- the API's keys of tenants the file no longer declares go with them
  for _, raw in ipairs(redis.call('HVALS', KEYS[i])) do redis.call('HDEL', KEYS[1], cjson.decode(raw)['digest']) end
  redis.call('DEL', KEYS[i])
end
local previous = redis.call('GET', KEYS[5])
if previous then
  for _, digest in ipairs(cjson.decode(previous)) do redis.call('HDEL', KEYS[1], digest) end
else
  redis.call('DEL', KEYS[1])  -- written before the file's keys were told apart: all of them were the file's
end
redis.call('DEL', KEYS[2], KEYS[6])
redis.call('INCR', KEYS[3])  -- a missed message shows as a new generation
local at = 2
local digests = {}
for _ = 1, tonumber(ARGV[at]) do
  redis.call('HSET', KEYS[1], ARGV[at + 1], ARGV[at + 2])
  digests[#digests + 1] = ARGV[at + 1]
  at = at + 2
end
redis.call('SET', KEYS[5], cjson.encode(digests))
at = at + 1
for _ = 1, tonumber(ARGV[at]) do
  redis.call('HSET', KEYS[6], ARGV[at + 1], ARGV[at + 2])
  at = at + 2
end
at = at + 1
for _ = 1, tonumber(ARGV[at]) do
  redis.call('SADD', KEYS[2], ARGV[at + 1])
  at = at + 1
end
redis.call('PUBLISH', ARGV[#ARGV], 'k')  -- web workers forget which key is whose
return -1
"""

# A seed's schedule step, unless a newer file's seed has reached the schedule already.
_SEED_SCHEDULE = """
if tonumber(redis.call('GET', KEYS[2]) or '-1') > tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[2], ARGV[1])
local added = tonumber(ARGV[2])
for i = 3, 2 + 2 * added, 2 do redis.call('ZADD', KEYS[1], 'NX', ARGV[i + 1], ARGV[i]) end
for i = 3 + 2 * added, #ARGV do redis.call('ZREM', KEYS[1], ARGV[i]) end
return 1
"""

# A seed's step for one tenant, unless a newer file's seed has reached the tenant already: its
# fingerprint, and the results of its removed integrations gone.
_SEED_TENANT = _HISTORY_LUA + """
local seeded = redis.call('GET', KEYS[1])
if seeded and tonumber(string.match(seeded, '^(%d+):') or '-1') > tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. ARGV[2])
for i = 3, #ARGV do
  redis.call('HDEL', KEYS[2], ARGV[i])
  redis.call('ZREM', KEYS[3], ARGV[i])
  drop_history(ARGV[i])
end
return 1
"""

# Drop a tenant the config file no longer declares, unless a newer file's seed has reached it, or
# the admin API has made a tenant of the id since.
_DROP_TENANT = _HISTORY_LUA + """
local seeded = redis.call('GET', KEYS[1])
if seeded and string.sub(seeded, 1, 4) == 'api:' then return 0 end
if seeded and tonumber(string.match(seeded, '^(%d+):') or '-1') > tonumber(ARGV[1]) then return 0 end
drop_history(nil)
for i = 1, #KEYS do redis.call('DEL', KEYS[i]) end
return 1
"""

# The seed's last step marks it complete, unless a newer file's seed began meanwhile.
_FINISH_SEED = """
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""


class StoreUnavailable(Exception):
    """Redis did not answer, or holds no registry yet; the caller should retry later.

    `reachable` says Redis answered (with a refusal, or with nothing to say yet).
    """

    reachable = False


class OlderGeneration(Exception):
    """Redis holds the registry of a newer config file: this one must not be seeded over it."""

    def __init__(self, newest: int) -> None:
        super().__init__(f"Redis holds config generation {newest}")
        self.newest = newest


class TenantConflict(Exception):
    """The config file declares a tenant that was made through the admin API."""

    def __init__(self, tenant_id: str) -> None:
        super().__init__(f"tenant {tenant_id} was made through the admin API")
        self.tenant_id = tenant_id


@dataclass(frozen=True)
class Fenced:
    """What record() says of a tenant it wrote nothing for: its seeded registry differs, or is lost."""

    lost: bool


class NotSeeded(StoreUnavailable):
    """Redis answers but holds no registry (or report) yet: no prober has written it."""

    reachable = True


@dataclass(frozen=True)
class Claim:
    """An integration this prober holds until `lease_ms`; it was due at `due_ms`."""

    member: str
    due_ms: int
    lease_ms: int
    fence: int = 0  # larger than every earlier claim's: orders results whatever the probers' clocks


@dataclass(frozen=True)
class StoredReport:
    """A tenant's prebuilt report: its body, results version, and when its results turn stale.

    `until` is when the first result still fresh turns stale (epoch seconds); `stale` is the raw
    JSON of every result's stale time, parsed only when the report has to be aged. `etag` names the
    body's bytes. A report read `whole=False` (for a conditional GET) holds neither body nor stale times.
    """

    tenant_id: str
    body: bytes
    until: float
    version: int = 0
    stale: bytes = b"{}"
    etag: str = ""
    whole: bool = True


@dataclass(frozen=True)
class Recorded:
    """What recording a tenant's states did: its version, the ids to recompute, and what changed.

    `states` holds every state changed since the caller's version, or every state when `full`.
    """

    version: int
    conflicts: list[str]
    dropped: list[str]
    full: bool
    states: dict[str, State]
    incarnation: str  # the tenant's history: versions compare only within one
    outdated: list[str] = field(default_factory=list)  # dropped: probed by a definition since changed or removed


def connect(url: str, timeout_s: float = 1.0, cluster: bool = False) -> redis.Redis:
    """Return a client with short timeouts and one quick retry (for a pooled socket Redis closed).

    Every script is safe to run twice (see each one), so the retry cannot do anything twice.
    """
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


def _report(tenant_id: str, raw: Sequence[bytes | None]) -> StoredReport | None:
    until, version, tag = raw[:3]
    if version is None:
        return None
    if len(raw) == len(_HEAD_FIELDS):
        return StoredReport(tenant_id, b"", _until(until), int(version), etag=_text(tag or b""), whole=False)
    body, stale = raw[3:]
    if body is None:
        return None
    # A report written before entity tags were kept gets its tag here.
    return StoredReport(tenant_id, body, _until(until), int(version), stale or b"{}", _text(tag) if tag else etag(body))


_HEAD_FIELDS = ["until", "v", "e"]  # what a conditional GET reads first: no body
_REPORT_FIELDS = [*_HEAD_FIELDS, "body", "stale"]
PUBSUB_PING_S = 1.0  # how often a follower of the changes channel checks that its link is alive
PUBSUB_DEAD_S = 3.0  # a link whose ping has gone unanswered this long is taken as broken


class Store:
    """Every read and write the service makes, under one key prefix.

    `client` may be a function that makes the client: a Redis Cluster client connects as it is
    made, and a process must start, and answer 503, while the cluster is down.
    """

    def __init__(self, client: redis.Redis | Callable[[], redis.Redis], prefix: str = "status:", timeout_s: float = 1.0) -> None:
        self._client = client if isinstance(client, (redis.Redis, RedisCluster)) else None
        # A retried call runs at most two timeouts and a backoff after its first try: a claim's reply
        # is kept at least that long (timeout_s is the client's, as given to connect()).
        self.reply_ms = max(CLAIM_REPLY_MS, _ms(2 * timeout_s + 1))
        self._make = None if self._client is not None else client
        self._made = threading.Lock()
        self.prefix = prefix
        self.channel = f"{prefix}changes"  # pub/sub: report and key registry changes, for web workers
        self._scripts: dict[str, Any] = {}

    @property
    def client(self) -> redis.Redis:
        """Return the client, making it on first use; raise StoreUnavailable if that fails."""
        if self._client is None:
            with self._made:
                if self._client is None:
                    self._client = self._call(self._make)  # type: ignore[arg-type]
        return self._client

    def _script(self, source: str, keys: list[str], args: list[Any]) -> Any:
        """Run a Lua script by its digest, loading it first if the server lacks it."""
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self.client.register_script(source)
        return script(keys=keys, args=args)

    # -- key names -----------------------------------------------------------------------------
    def due_key(self) -> str:
        """Return the key of the schedule."""
        return f"{self.prefix}{{sched}}:due"

    def fence_key(self) -> str:
        """Return the key of the fencing token counter."""
        return f"{self.prefix}{{sched}}:fence"

    def probers_key(self) -> str:
        """Return the key of the prober heartbeats."""
        return f"{self.prefix}{{fleet}}:probers"

    def keys_key(self) -> str:
        """Return the key of the API key registry."""
        return f"{self.prefix}{{reg}}:keys"

    def tenants_key(self) -> str:
        """Return the key of the registered tenant ids."""
        return f"{self.prefix}{{reg}}:tenants"

    def generation_key(self) -> str:
        """Return the key of the key registry's generation, bumped with every change."""
        return f"{self.prefix}{{reg}}:generation"

    def file_key(self) -> str:
        """Return the key of the generation of the config file last seeded."""
        return f"{self.prefix}{{reg}}:file"

    def schedule_generation_key(self) -> str:
        """Return the key of the generation of the config file whose seed last wrote the schedule."""
        return f"{self.prefix}{{sched}}:file"

    def api_tenants_key(self) -> str:
        """Return the key of the tenants made through the admin API (see store/admin.py)."""
        return f"{self.prefix}{{reg}}:api:tenants"

    def api_keys_key(self, tenant_id: str) -> str:
        """Return the key of a tenant's keys made through the admin API (see store/admin.py)."""
        return f"{self.prefix}{{reg}}:api:keys:{tenant_id}"

    def file_keys_key(self) -> str:
        """Return the key of the JSON list of the key digests the config file declared."""
        return f"{self.prefix}{{reg}}:file:keys"

    def admins_key(self) -> str:
        """Return the key of the admin API's key digests (from the config file) and their ids."""
        return f"{self.prefix}{{reg}}:admins"

    def registry_key(self, tenant_id: str) -> str:
        """Return the key of the fingerprint of a tenant's integrations as last seeded."""
        return f"{self.prefix}{{t:{tenant_id}}}:registry"

    def config_key(self) -> str:
        """Return the key of the seed marker."""
        return f"{self.prefix}{{reg}}:config"

    def tenant_base(self, tenant_id: str) -> str:
        """Return the prefix of every key of a tenant's own data: one hash slot, whatever follows it."""
        return f"{self.prefix}{{t:{tenant_id}}}:"

    def results_key(self, tenant_id: str) -> str:
        """Return the key of a tenant's states."""
        return f"{self.prefix}{{t:{tenant_id}}}:results"

    def version_key(self, tenant_id: str) -> str:
        """Return the key of a tenant's results version."""
        return f"{self.prefix}{{t:{tenant_id}}}:version"

    def changed_key(self, tenant_id: str) -> str:
        """Return the key of the version at which each of a tenant's states last changed."""
        return f"{self.prefix}{{t:{tenant_id}}}:changed"

    def incarnation_key(self, tenant_id: str) -> str:
        """Return the key of the id of a tenant's history, new whenever Redis has lost it."""
        return f"{self.prefix}{{t:{tenant_id}}}:incarnation"

    def report_key(self, tenant_id: str) -> str:
        """Return the key of a tenant's prebuilt report."""
        return f"{self.prefix}{{t:{tenant_id}}}:report"

    def integrations_key(self, tenant_id: str) -> str:
        """Return the key of a tenant's integrations made through the admin API (see store/catalog.py)."""
        return f"{self.prefix}{{t:{tenant_id}}}:integrations"

    def tenant_changes_key(self, tenant_id: str) -> str:
        """Return the key of the stream of a tenant's integration changes (see store/catalog.py)."""
        return f"{self.prefix}{{t:{tenant_id}}}:changes"

    def feed_key(self) -> str:
        """Return the key of the stream naming each tenant whose admin API integrations changed."""
        return f"{self.prefix}{{reg}}:feed"

    def settings_key(self) -> str:
        """Return the key of the admin API's settings, from the config file last seeded (JSON)."""
        return f"{self.prefix}{{reg}}:settings"

    # -- guarded calls -------------------------------------------------------------------------
    def _call(self, action: Callable[[], T]) -> T:
        """Run a Redis action, translating every Redis failure into StoreUnavailable."""
        try:
            return action()
        except (redis.RedisError, RedisClusterException) as exc:
            # A server's refusal (NOPERM, WRONGTYPE, ...) says what is wrong; a lost connection does not need to.
            refused = isinstance(exc, redis.ResponseError)
            error = StoreUnavailable(f"{exc.__class__.__name__}{f': {exc}' if refused else ''}")
            error.reachable = refused
            raise error from exc

    # -- web side ------------------------------------------------------------------------------
    def lookup(self, digests: Sequence[str], hint: str | None = None, whole: bool = True) -> tuple[str, StoredReport] | None:
        """Return (the digest that matched, its tenant's report), or None when no digest is known.

        `hint` is the tenant these digests belonged to last time: its report is read in the same
        round trip as the key lookup, and used only if the key still belongs to it. With `whole`
        False, only the report's version, stale time and entity tag are read.
        """
        fields = _REPORT_FIELDS if whole else _HEAD_FIELDS

        def run() -> tuple[bool, list[bytes | None], list[bytes | None] | None]:
            pipe = self.client.pipeline(transaction=False)
            pipe.exists(self.config_key())
            pipe.hmget(self.keys_key(), list(digests))
            if hint is not None:
                pipe.hmget(self.report_key(hint), fields)
            replies = pipe.execute()
            return bool(replies[0]), replies[1], replies[2] if hint is not None else None

        seeded, owners, hinted = self._call(run)
        matched = next(((d, o.decode()) for d, o in zip(digests, owners) if o is not None), None)
        if matched is None:
            if not seeded:
                raise NotSeeded("registry not seeded")
            return None
        digest, tenant_id = matched
        if tenant_id != hint or hinted is None:
            hinted = self._call(lambda: self.client.hmget(self.report_key(tenant_id), fields))
        found = _report(tenant_id, hinted)
        if found is None:
            raise NotSeeded("report not built yet")
        return digest, found

    def tallies(self, tenant_ids: Sequence[str]) -> dict[str, tuple[dict[str, dict[str, int]] | None, float]]:
        """Return each tenant's counts of integrations by type and status as its report last said them (None: none kept),
        and when its first result turns stale."""
        def run() -> list[list[bytes | None]]:
            pipe = self.client.pipeline(transaction=False)
            for tenant_id in tenant_ids:
                pipe.hmget(self.report_key(tenant_id), ["c", "until"])
            return pipe.execute()

        return {t: (json.loads(raw) if raw else None, _until(until))
                for t, (raw, until) in zip(tenant_ids, self._call(run) if tenant_ids else [])}

    def report(self, tenant_id: str) -> StoredReport | None:
        """Return a tenant's report by its id (for a badge token, which names its tenant), or None."""
        return _report(tenant_id, self._call(lambda: self.client.hmget(self.report_key(tenant_id), _REPORT_FIELDS)))

    def time(self) -> float:
        """Return Redis's clock (epoch seconds): the one clock every prober shares."""
        seconds, micros = self._call(lambda: self.client.time())
        return seconds + micros / 1e6

    def readiness(self, now: float) -> tuple[bool, int]:
        """Return whether a registry is seeded and how many probers have a fresh heartbeat."""

        def run() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            pipe.exists(self.config_key())
            pipe.zcount(self.probers_key(), _ms(now), "+inf")
            return pipe.execute()

        seeded, probers = self._call(run)
        return bool(seeded), int(probers)

    def follow_changes(self, handle: Callable[[str | None], None], stopped: threading.Event) -> None:
        """Pass each message of the changes channel to `handle` until `stopped`; raise StoreUnavailable when the link breaks.

        handle(None) is called once the subscription is confirmed: from then on no change is missed
        while this runs. A ping every second, answered within PUBSUB_DEAD_S, proves the link alive.
        """

        def run() -> None:
            pubsub = self.client.pubsub()
            try:
                pubsub.subscribe(self.channel)
                pinged = answered = time.monotonic()
                while not stopped.is_set():
                    message = pubsub.get_message(timeout=PUBSUB_PING_S)
                    now = time.monotonic()
                    if message is not None:
                        kind = _text(message["type"])
                        if kind == "subscribe":
                            handle(None)
                        elif kind == "message":
                            handle(_text(message["data"]))
                        elif kind == "pong":
                            answered = now
                    if now - answered > PUBSUB_DEAD_S:
                        raise redis.ConnectionError("no answer to ping on the changes channel")
                    if now - pinged >= PUBSUB_PING_S:
                        pubsub.ping()
                        pinged = now
                        # Messages are not guaranteed across a cluster's bus: a missed key change
                        # still shows here, as a new generation, within a ping.
                        handle(f"g {int(self.client.get(self.generation_key()) or 0)}")
            finally:
                pubsub.close()

        self._call(run)

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
        return self.seeded_generation() is not None

    def is_registered(self, tenant_id: str) -> bool:
        """Return whether the config file last seeded declares this tenant."""
        return bool(self._call(lambda: self.client.sismember(self.tenants_key(), tenant_id)))

    def seeded_generation(self) -> int | None:
        """Return the generation of the config file Redis holds the registry of, or None if none."""
        def run() -> tuple[int, bytes | None]:
            pipe = self.client.pipeline(transaction=False)
            pipe.exists(self.config_key())
            pipe.get(self.file_key())
            return tuple(pipe.execute())  # type: ignore[return-value]

        seeded, generation = self._call(run)
        return int(generation or 0) if seeded else None

    def claim(self, now: float | None, lease_s: float, limit: int, request_id: str | None = None) -> tuple[float | None, list[Claim]]:
        """Atomically take up to `limit` due integrations, leased for lease_s; return the time used too.

        `now` None means Redis's own clock decides what is due (a test passes its own time). A call
        repeated with the same `request_id` while its reply is kept (see reply_ms) returns the first call's claims. With
        no room to claim, nothing is asked and the time is None.
        """
        if limit <= 0:
            return None, []
        keys = [self.due_key(), self.fence_key(), f"{self.prefix}{{sched}}:claim:{request_id or uuid.uuid4().hex}"]
        args = ["" if now is None else _ms(now), _ms(lease_s), limit, self.reply_ms]
        flat = self._call(lambda: self._script(_CLAIM, keys, args))
        at, lease_ms = int(flat[0]), int(flat[1])
        claims = [
            Claim(member=_text(flat[i]), due_ms=int(float(flat[i + 1])), lease_ms=lease_ms, fence=int(flat[i + 2]))
            for i in range(2, len(flat), 3)
        ]
        return at / 1000, claims

    def reschedule(self, items: Iterable[tuple[Claim, float]]) -> int:
        """Set each held claim's next due time (epoch seconds); return how many were still ours."""
        args: list[str | int] = []
        for claim, next_due in items:
            args += [claim.member, str(claim.lease_ms), _ms(next_due)]
        if not args:
            return 0
        return int(self._call(lambda: self._script(_COMPLETE, [self.due_key()], args)))

    def extend(self, items: Iterable[tuple[Claim, int]]) -> set[str]:
        """Give held claims longer leases (ms); return the members whose claims were still held, now extended."""
        args = [x for claim, lease_ms in items for x in (claim.member, str(claim.lease_ms), lease_ms)]
        if not args:
            return set()
        return {_text(m) for m in self._call(lambda: self._script(_EXTEND, [self.due_key()], args))}

    def states(self, wanted: Mapping[str, Iterable[str]]) -> dict[str, dict[str, State]]:
        """Return the stored states of the wanted integrations (tenant -> ids), those that have one."""
        asked = {tenant_id: list(ids) for tenant_id, ids in wanted.items() if ids}

        def run() -> list[list[bytes | None]]:
            pipe = self.client.pipeline(transaction=False)
            for tenant_id, ids in asked.items():
                pipe.hmget(self.results_key(tenant_id), ids)
            return pipe.execute()

        return {
            tenant_id: {iid: State.from_json(json.loads(raw)) for iid, raw in zip(ids, replies) if raw is not None}
            for (tenant_id, ids), replies in zip(asked.items(), self._call(run))
        }

    def record(
        self, writes: Mapping[str, tuple[str, int, Mapping[str, tuple[int, State]]]], prints: Mapping[str, str],
        revs: Mapping[str, Mapping[str, str]] | None = None,
        history: Mapping[str, Mapping[str, tuple[str, str]]] | None = None, keep: tuple[int, int] = (0, 0),
    ) -> dict[str, Recorded | Fenced]:
        """Write states per tenant: (incarnation and version the caller knows, or "" and -1; id -> (fence followed, new state)).

        `prints` holds the caller's fingerprint of each tenant's integrations; a tenant whose stored
        one differs (or is lost) is written nothing and maps to Fenced. `revs` holds the rev of each
        admin API integration probed (tenant -> id -> rev); a state whose integration has another is dropped.
        `history` holds, per tenant and id, the raw check and the event (or "") kept with a state if it
        is written; `keep` the oldest ms of raw checks and of events to keep.
        """
        tenant_ids = list(writes)

        def run() -> list[list[Any]]:
            # Plain EVAL, not a registered script: a cluster pipeline cannot load scripts beforehand.
            pipe = self.client.pipeline(transaction=False)
            for tenant_id in tenant_ids:
                incarnation, known, states = writes[tenant_id]
                rev = (revs or {}).get(tenant_id, {})
                kept = (history or {}).get(tenant_id, {})
                args = [x for iid, (follows, s) in states.items()
                        for x in (iid, s.fence, follows, json.dumps(s.to_json()), rev.get(iid, ""), *kept.get(iid, ("", "")))]
                keys = [self.results_key(tenant_id), self.version_key(tenant_id), self.changed_key(tenant_id),
                        self.incarnation_key(tenant_id), self.registry_key(tenant_id), self.integrations_key(tenant_id)]
                pipe.execute_command(
                    "EVAL", _RECORD, len(keys), *keys, known, incarnation, uuid.uuid4().hex, prints.get(tenant_id, ""),
                    self.tenant_base(tenant_id), *keep, *args,
                )
            return pipe.execute()

        replies = self._call(run) if tenant_ids else []
        return {tenant_id: _recorded(reply) for tenant_id, reply in zip(tenant_ids, replies)}

    def put_reports(self, reports: Iterable[tuple[str, int, bytes, Mapping[str, float], float]], prints: Mapping[str, str],
                    statuses: Mapping[str, Mapping[str, str]] | None = None, at: float = 0.0, events_from: int = 0,
                    counts: Mapping[str, Mapping[str, Mapping[str, int]]] | None = None) -> None:
        """Store prebuilt reports (tenant, results version, body, stale time per id, next stale time).

        A report is kept only if `prints` holds the tenant's seeded fingerprint (see record()). With
        `statuses` (tenant -> scope -> status), each one that changed is an event at `at`, kept from
        `events_from` (ms). `counts` holds each report's integrations by type and status (report.tally).
        """

        def run() -> None:
            pipe = self.client.pipeline(transaction=False)  # plain EVAL, as in record()
            for tenant_id, version, body, stale, until in reports:
                said = (statuses or {}).get(tenant_id)
                tallied = (counts or {}).get(tenant_id)
                pipe.execute_command(
                    "EVAL", _PUT_REPORT, 2, self.report_key(tenant_id), self.registry_key(tenant_id),
                    version, body, _until_arg(until), json.dumps(stale), self.channel, tenant_id, prints.get(tenant_id, ""),
                    json.dumps(said, sort_keys=True) if said is not None else "", round(at * 1000), events_from, etag(body),
                    json.dumps(tallied, separators=(",", ":")) if tallied is not None else "",
                )
            pipe.execute()

        self._call(run)

    def tenant_keys(self, tenant_id: str) -> list[str]:
        """Return every key of a tenant's own data (results, report and their bookkeeping, webhooks and their outbox).

        History's keys and the webhooks' queues are listed in the tenant's history:keys, and dropped with it in Lua.
        """
        base = self.tenant_base(tenant_id)
        return [self.registry_key(tenant_id), self.results_key(tenant_id), self.changed_key(tenant_id),
                self.incarnation_key(tenant_id), self.version_key(tenant_id), self.report_key(tenant_id),
                self.integrations_key(tenant_id), self.tenant_changes_key(tenant_id),
                *(base + name for name in ("webhooks", "outbox", "dead", "dead:at", "maintenance", "badges"))]  # store/webhooks.py, maintenance.py, badges.py

    def seed(
        self,
        fingerprint: str,
        generation: int,
        owners: Mapping[str, str],
        prints: Mapping[str, str],
        members: Mapping[str, float],
        admins: Mapping[str, str] | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> list[str]:
        """Make Redis match a config file's registry and return the members removed.

        `owners` maps key digests to tenants, `admins` admin key digests to their ids (keys made
        through the admin API stay), `settings` the admin API's settings; `prints` maps every tenant to the fingerprint of its
        integrations; `members` maps every integration's schedule name to its first due time. New
        members are added with that time, existing ones keep theirs, and members and tenants no
        longer registered are removed with their data. Raises OlderGeneration, changing nothing,
        when Redis holds a newer file's registry.
        """

        admins = admins or {}

        def run() -> list[str]:
            known = {m.decode() for m in self.client.zrange(self.due_key(), 0, -1)}
            gone_tenants = {t.decode() for t in self.client.smembers(self.tenants_key())} - set(prints)
            api_tenants = {t.decode() for t in self.client.hkeys(self.api_tenants_key())}
            # The admin API's integrations are not the file's to remove.
            removed = sorted(m for m in known - members.keys() if split_member(m)[0] not in api_tenants)
            newest = self._script(
                _SET_REGISTRY,
                [self.keys_key(), self.tenants_key(), self.generation_key(), self.file_key(), self.file_keys_key(),
                 self.admins_key(), self.api_tenants_key(), self.settings_key(),
                 *[self.api_keys_key(t) for t in sorted(gone_tenants)]],
                [generation, len(owners), *[x for pair in owners.items() for x in pair],
                 len(admins), *[x for pair in admins.items() for x in pair],
                 len(prints), *prints, json.dumps(dict(settings or {})), self.channel],
            )
            if isinstance(newest, bytes):
                raise TenantConflict(newest.decode().partition(":")[2])
            if int(newest) >= 0:
                raise OlderGeneration(int(newest))
            # Each step below is a script that a newer file's seed, should it overtake this one, refuses.
            gone_by_tenant: dict[str, list[str]] = {}
            for member in removed:
                tenant_id, integration_id = split_member(member)
                gone_by_tenant.setdefault(tenant_id, []).append(integration_id)
            pipe = self.client.pipeline(transaction=False)
            # First: from here on, a prober that has not reloaded writes nothing for a changed tenant.
            for tenant_id, tenant_print in prints.items():
                keys = [self.registry_key(tenant_id), self.results_key(tenant_id), self.changed_key(tenant_id)]
                pipe.execute_command("EVAL", _SEED_TENANT, len(keys), *keys, generation, tenant_print,
                                     *gone_by_tenant.get(tenant_id, []))
            for tenant_id in gone_tenants:
                keys = self.tenant_keys(tenant_id)
                pipe.execute_command("EVAL", _DROP_TENANT, len(keys), *keys, generation)
            pipe.execute()
            self._script(
                _SEED_SCHEDULE, [self.due_key(), self.schedule_generation_key()],
                [generation, len(members), *[x for m, t in members.items() for x in (m, _ms(t))], *removed],
            )
            # Last: its presence means the seed is complete.
            self._script(_FINISH_SEED, [self.config_key(), self.file_key()], [fingerprint, generation])
            return removed

        return self._call(run)


def _recorded(reply: list[Any]) -> Recorded | Fenced:
    if len(reply) == 1:  # the caller's registry of the tenant is not the seeded one, or it was lost
        return Fenced(lost=int(reply[0]) == -2)
    version, conflicts, dropped, full, flat, incarnation, outdated = reply
    return Recorded(
        version=int(version),
        conflicts=[_text(c) for c in conflicts],
        dropped=[_text(d) for d in dropped],
        outdated=[_text(d) for d in outdated],
        full=bool(full),
        states=_decode_states(dict(zip(flat[::2], flat[1::2]))),
        incarnation=_text(incarnation),
    )


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _decode_states(raw: Mapping[bytes, bytes]) -> dict[str, State]:
    return {k.decode(): State.from_json(json.loads(v)) for k, v in raw.items()}
