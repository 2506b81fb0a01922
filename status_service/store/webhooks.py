"""Webhooks in Redis: their registry, and the outbox a tenant's events pass through on their way out.

Keys, under the tenant's base (see Store.tenant_base), so each step is one script in one slot:
- `webhooks`: hash, webhook id -> JSON {url (sealed), events, secret (sealed), created_at} (the admin API's);
- `events`: the events feed (store/history.py), read through the consumer group GROUP: each entry is
  handed to one dispatcher, and stays pending until fanned out, so a dispatcher that dies holding
  it leaves it to be claimed again;
- `outbox`: hash, job ("<webhook id>|<event id>") -> JSON {w, e, n (attempts), first (ms), err};
- `outbox:<webhook id>`: zset, job -> when to try it next (ms), one queue per webhook so that one
  receiver's backlog never stands before another's; a dispatcher that takes a job pushes it to its
  lease end, so a dead dispatcher's job comes back. Listed in `history:keys`, which a tenant's
  removal empties (see store/__init__.py);
- `dead`: hash, job -> JSON of a job whose retry window ended (listed and replayed by the admin API),
  and `dead:at`, zset, job -> when it died (ms): at most MAX_DEAD are kept, the oldest dropped first.
And P{reg}:hooked: set, the tenants with webhooks made through the admin API.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import redis

from . import Store, _text

GROUP = "webhooks"
MAX_DEAD = 10_000  # dead letters kept per tenant; past that the oldest are dropped
CLAIM_IDLE_MS = 60_000  # an event pending this long with a dispatcher is taken over by another
IDLE_CONSUMER_MS = 3_600_000  # a consumer (a prober process) idle this long, holding nothing, is forgotten

# Queue a job (its webhook's queue listed for removal with the tenant); the caller holds `base`.
_QUEUE_LUA = """
local function queue(base, hook, job, due)
  redis.call('ZADD', base .. 'outbox:' .. hook, due, job)
  redis.call('SADD', base .. 'history:keys', 'outbox:' .. hook)
end
"""

# Turn a tenant's events into jobs (ARGV: now ms, then event id and its jobs' webhook ids, '' ending
# each event's), and acknowledge them, in one step: an event is fanned out once, or left pending.
_FANOUT = _QUEUE_LUA + """
local base, now, i = KEYS[1], ARGV[1], 2
while i <= #ARGV do
  local event = ARGV[i]
  i = i + 1
  while ARGV[i] ~= '' do
    local job = ARGV[i] .. '|' .. event
    if redis.call('HSETNX', base .. 'outbox', job, cjson.encode({w = ARGV[i], e = event, n = 0, first = tonumber(now)})) == 1 then
      queue(base, ARGV[i], job, now)
    end
    i = i + 1
  end
  i = i + 1
  redis.call('XACK', base .. 'events', 'webhooks', event)  -- the consumer group, GROUP
end
return 0
"""

# Take jobs due at ARGV[1] (ms), leased until ARGV[2], from webhooks' queues (ARGV[3...]: webhook id
# and how many); return job, its JSON and the event's entry text ('' if the feed no longer holds it) for each.
_TAKE = """
local base = KEYS[1]
local out = {}
for i = 3, #ARGV, 2 do
  local key = base .. 'outbox:' .. ARGV[i]
  for _, job in ipairs(redis.call('ZRANGEBYSCORE', key, '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[i + 1]))) do
    local raw = redis.call('HGET', base .. 'outbox', job)
    if raw then
      redis.call('ZADD', key, ARGV[2], job)
      local event = cjson.decode(raw)['e']
      local found = redis.call('XRANGE', base .. 'events', event, event)[1]
      out[#out + 1] = job
      out[#out + 1] = raw
      out[#out + 1] = found and found[2][2] or ''
    else
      redis.call('ZREM', key, job)
    end
  end
end
return out
"""

# Settle a job (ARGV[1], of webhook ARGV[7]) taken under lease ARGV[2]: 'done' removes it, 'retry'
# keeps it (ARGV[4]: its JSON) due at ARGV[3], 'dead' moves it to the dead letters (dead at ARGV[3],
# at most ARGV[6] kept). A job taken over since (its lease changed) is left alone.
_SETTLE = _QUEUE_LUA + """
local base, job, key = KEYS[1], ARGV[1], KEYS[1] .. 'outbox:' .. ARGV[7]
if tonumber(redis.call('ZSCORE', key, job)) ~= tonumber(ARGV[2]) then return 0 end
if ARGV[5] == 'retry' then
  redis.call('HSET', base .. 'outbox', job, ARGV[4])
  queue(base, ARGV[7], job, ARGV[3])
  return 1
end
redis.call('HDEL', base .. 'outbox', job)
redis.call('ZREM', key, job)
if ARGV[5] == 'dead' then
  redis.call('HSET', base .. 'dead', job, ARGV[4])
  redis.call('ZADD', base .. 'dead:at', ARGV[3], job)
  local over = redis.call('ZCARD', base .. 'dead:at') - tonumber(ARGV[6])
  if over > 0 then  -- the oldest go first
    for _, gone in ipairs(redis.call('ZRANGE', base .. 'dead:at', 0, over - 1)) do redis.call('HDEL', base .. 'dead', gone) end
    redis.call('ZREMRANGEBYRANK', base .. 'dead:at', 0, over - 1)
  end
end
return 1
"""

# Put dead jobs (ARGV[2...]; none: all of them) back in the outbox, due now (ARGV[1] ms), their attempts anew.
_REPLAY = _QUEUE_LUA + """
local base, now = KEYS[1], tonumber(ARGV[1])
local jobs = {}
for i = 2, #ARGV do jobs[#jobs + 1] = ARGV[i] end
if #jobs == 0 then jobs = redis.call('HKEYS', base .. 'dead') end
local done = {}
for _, job in ipairs(jobs) do
  local raw = redis.call('HGET', base .. 'dead', job)
  if raw then
    local entry = cjson.decode(raw)
    entry['n'], entry['first'], entry['err'], entry['dead_at'] = 0, now, nil, nil
    redis.call('HDEL', base .. 'dead', job)
    redis.call('ZREM', base .. 'dead:at', job)
    redis.call('HSET', base .. 'outbox', job, cjson.encode(entry))
    queue(base, entry['w'], job, now)
    done[#done + 1] = job
  end
end
return done
"""

# Drop a webhook's queue, its queued jobs and its dead letters.
_DROP_QUEUE_LUA = """
local function drop_queue(base, hook)
  for _, job in ipairs(redis.call('ZRANGE', base .. 'outbox:' .. hook, 0, -1)) do redis.call('HDEL', base .. 'outbox', job) end
  redis.call('DEL', base .. 'outbox:' .. hook)
  redis.call('SREM', base .. 'history:keys', 'outbox:' .. hook)
  for _, job in ipairs(redis.call('ZRANGE', base .. 'dead:at', 0, -1)) do
    if string.sub(job, 1, #hook + 1) == hook .. '|' then
      redis.call('HDEL', base .. 'dead', job)
      redis.call('ZREM', base .. 'dead:at', job)
    end
  end
end
"""

# Remove a webhook (ARGV[1]) with its queue; with the tenant's last webhook goes its consumer group,
# so webhooks made later start from the events of then, not a backlog.
_REMOVE = _DROP_QUEUE_LUA + """
local base, hook = KEYS[1], ARGV[1]
if redis.call('HDEL', base .. 'webhooks', hook) == 0 then return 0 end
drop_queue(base, hook)
if redis.call('HLEN', base .. 'webhooks') == 0 then redis.pcall('XGROUP', 'DESTROY', base .. 'events', 'webhooks') end
return 1
"""

# Drop the queue of a webhook no longer registered (one the config file dropped), unless the admin API has one of the id.
_DROP_ORPHAN = _DROP_QUEUE_LUA + """
if redis.call('HEXISTS', KEYS[1] .. 'webhooks', ARGV[1]) == 1 then return 0 end
drop_queue(KEYS[1], ARGV[1])
return 1
"""


@dataclass(frozen=True)
class Read:
    """What a dispatcher read of one tenant: new events (id, feed text), the admin API's webhooks, and the queues it saw (on a reclaim pass)."""

    events: list[tuple[str, str]]
    made: dict[str, Any]
    queues: set[str]


@dataclass(frozen=True)
class Job:
    """One delivery of one event to one webhook, as taken from the outbox."""

    tenant_id: str
    id: str
    webhook_id: str
    event_id: str
    attempts: int
    first_ms: int
    lease_ms: int
    event: str  # the feed entry's text ("<ms> <json>"), '' if the feed no longer holds it

    def state(self, **changes: Any) -> str:
        """Return the job's stored JSON, with changes."""
        return json.dumps({"w": self.webhook_id, "e": self.event_id, "n": self.attempts, "first": self.first_ms, **changes})


class Webhooks:
    """The webhooks' reads and writes, over the Store's client and key space."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def key(self, tenant_id: str, name: str) -> str:
        """Return the full name of one of a tenant's webhook keys."""
        return self.store.tenant_base(tenant_id) + name

    def hooked_key(self) -> str:
        """Return the key of the set of tenants with webhooks made through the admin API."""
        return f"{self.store.prefix}{{reg}}:hooked"

    # -- the admin API's side ------------------------------------------------------------------
    def add(self, tenant_id: str, webhook_id: str, definition: Mapping[str, Any]) -> None:
        """Register a webhook; events from now on reach it."""

        def run() -> None:
            # Defined before the tenant is listed: a removal racing this one re-lists it (see remove()).
            self.store.client.hset(self.key(tenant_id, "webhooks"), webhook_id, json.dumps(definition))
            self.store.client.sadd(self.hooked_key(), tenant_id)
            self._ensure_group(tenant_id)

        self.store._call(run)

    def forget(self, tenant_id: str) -> None:
        """Stop looking for a tenant's webhooks (it has none left, or was deleted with its keys)."""
        self.store._call(lambda: self.store.client.srem(self.hooked_key(), tenant_id))

    def remove(self, tenant_id: str, webhook_id: str) -> bool:
        """Remove a webhook with its queued deliveries and dead letters; False if there was none."""
        done = bool(self.store._call(lambda: self.store._script(_REMOVE, [self.store.tenant_base(tenant_id)], [webhook_id])))
        if done and not self.definitions(tenant_id):
            self.forget(tenant_id)
            if self.definitions(tenant_id):  # one was added meanwhile: list the tenant again
                self.store._call(lambda: self.store.client.sadd(self.hooked_key(), tenant_id))
        return done

    def drop_orphan(self, tenant_id: str, webhook_id: str) -> bool:
        """Drop the queue and dead letters of a webhook the config file no longer has (not one of the admin API's)."""
        return bool(self.store._call(lambda: self.store._script(_DROP_ORPHAN, [self.store.tenant_base(tenant_id)], [webhook_id])))

    def drop_groups(self, tenant_ids: Iterable[str]) -> None:
        """Stop reading these tenants' events (they have no webhook): webhooks added later start from then."""
        ids = list(tenant_ids)

        def run() -> None:
            pipe = self.store.client.pipeline(transaction=False)
            for tenant_id in ids:
                pipe.execute_command("XGROUP", "DESTROY", self.key(tenant_id, "events"), GROUP)
            pipe.execute(raise_on_error=False)  # a tenant with no events, or no group, has nothing to drop

        if ids:
            self.store._call(run)

    def definitions(self, tenant_id: str) -> dict[str, dict[str, Any]]:
        """Return a tenant's webhooks made through the admin API (secrets sealed)."""
        raw = self.store._call(lambda: self.store.client.hgetall(self.key(tenant_id, "webhooks")))
        return {_text(k): json.loads(v) for k, v in raw.items()}

    def dead(self, tenant_id: str) -> dict[str, dict[str, Any]]:
        """Return a tenant's dead letters: job -> its last state."""
        raw = self.store._call(lambda: self.store.client.hgetall(self.key(tenant_id, "dead")))
        return {_text(k): json.loads(v) for k, v in raw.items()}

    def replay(self, tenant_id: str, jobs: Sequence[str], now: float) -> list[str]:
        """Queue dead letters again (none named: all of them), due now; return those queued."""
        done = self.store._call(lambda: self.store._script(_REPLAY, [self.store.tenant_base(tenant_id)], [round(now * 1000), *jobs]))
        return [_text(j) for j in done]

    # -- the dispatchers' side -----------------------------------------------------------------
    def hooked(self) -> list[str]:
        """Return the tenants with webhooks made through the admin API."""
        return [_text(t) for t in self.store._call(lambda: self.store.client.smembers(self.hooked_key()))]

    def ensure_groups(self, tenant_ids: Iterable[str]) -> None:
        """Make sure these tenants' events are read through the consumer group, from now on if it is new."""
        for tenant_id in tenant_ids:
            self.store._call(lambda: self._ensure_group(tenant_id))

    def _ensure_group(self, tenant_id: str, make_stream: bool = True) -> None:
        try:
            self.store.client.xgroup_create(self.key(tenant_id, "events"), GROUP, id="$", mkstream=make_stream)
        except redis.ResponseError as exc:
            # Without make_stream, a tenant with no events (just deleted, say) is left without a stream.
            if "BUSYGROUP" not in str(exc) and make_stream:
                raise

    def read(self, tenant_ids: Sequence[str], consumer: str, reclaim: bool, file_hooked: Iterable[str] = ()) -> dict[str, Read]:
        """Return, per tenant, new events handed to `consumer` (and, with `reclaim`, those another left pending,
        and the webhooks its queues are for) and its webhooks of the admin API.

        `file_hooked`: the tenants the config file gives webhooks; for the others, a lost group comes
        back only while the admin API has webhooks for them.
        """
        file_hooked = set(file_hooked)

        def run() -> dict[str, Read]:
            pipe = self.store.client.pipeline(transaction=False)
            for tenant_id in tenant_ids:
                pipe.xreadgroup(GROUP, consumer, {self.key(tenant_id, "events"): ">"}, count=100)
                pipe.hgetall(self.key(tenant_id, "webhooks"))
                if reclaim:
                    pipe.xautoclaim(self.key(tenant_id, "events"), GROUP, consumer, CLAIM_IDLE_MS, count=100)
                    pipe.smembers(self.key(tenant_id, "history:keys"))
            replies = pipe.execute(raise_on_error=False)
            step = 4 if reclaim else 2
            out = {}
            for n, tenant_id in enumerate(tenant_ids):
                fresh, hooks, *claimed = replies[n * step:(n + 1) * step]
                if isinstance(fresh, redis.ResponseError):  # no group (Redis lost it, or no event was written yet)
                    if "NOGROUP" not in str(fresh):
                        raise fresh
                    if hooks or tenant_id in file_hooked:  # not for a tenant whose last webhook just went
                        self._ensure_group(tenant_id, make_stream=False)
                    fresh = []
                entries = [e for _, stream in (fresh or []) for e in stream]
                queues: set[str] = set()
                if claimed and not isinstance(claimed[0], redis.ResponseError):
                    entries += [e for e in claimed[0][1] if e]
                if claimed and not isinstance(claimed[1], redis.ResponseError):
                    queues = {_text(k)[len("outbox:"):] for k in claimed[1] if _text(k).startswith("outbox:")}
                # An entry the feed trimmed comes back empty (Redis 6): fanned out to nobody, it is acknowledged.
                events = [(_text(eid), _text(fields[b"e"]) if fields else "") for eid, fields in entries]
                out[tenant_id] = Read(events, {_text(k): json.loads(v) for k, v in hooks.items()}, queues)
            if reclaim:
                self._forget_idle_consumers(tenant_ids, consumer)
            return out

        return self.store._call(run)

    def _forget_idle_consumers(self, tenant_ids: Sequence[str], consumer: str) -> None:
        """Drop the group's consumers that hold nothing and have been idle an hour: each prober process is one, and they come and go."""
        pipe = self.store.client.pipeline(transaction=False)
        for tenant_id in tenant_ids:
            pipe.xinfo_consumers(self.key(tenant_id, "events"), GROUP)
        found = pipe.execute(raise_on_error=False)
        pipe = self.store.client.pipeline(transaction=False)
        stale = 0
        for tenant_id, consumers in zip(tenant_ids, found):
            for c in consumers if isinstance(consumers, list) else []:
                if _text(c["name"]) != consumer and int(c["pending"]) == 0 and int(c["idle"]) > IDLE_CONSUMER_MS:
                    pipe.xgroup_delconsumer(self.key(tenant_id, "events"), GROUP, c["name"])
                    stale += 1
        if stale:
            pipe.execute(raise_on_error=False)

    def fan_out(self, jobs: Mapping[str, Sequence[tuple[str, Sequence[str]]]], now: float) -> None:
        """Queue each event's jobs (tenant -> [(event id, webhook ids)]) and acknowledge the events."""

        def run() -> None:
            pipe = self.store.client.pipeline(transaction=False)  # plain EVAL, as in Store.record
            for tenant_id, events in jobs.items():
                args = [x for event_id, hooks in events for x in (event_id, *hooks, "")]
                pipe.execute_command("EVAL", _FANOUT, 1, self.store.tenant_base(tenant_id), round(now * 1000), *args)
            pipe.execute()

        if jobs:
            self.store._call(run)

    def take(self, limits: Mapping[str, Mapping[str, int]], now: float, lease_s: float) -> list[Job]:
        """Take up to a number of due jobs per tenant and webhook, leased for lease_s."""
        tenant_ids = [t for t, hooks in limits.items() if any(n > 0 for n in hooks.values())]
        lease = round((now + lease_s) * 1000)

        def run() -> list[Any]:
            pipe = self.store.client.pipeline(transaction=False)
            for tenant_id in tenant_ids:
                wanted = [x for hook, n in limits[tenant_id].items() if n > 0 for x in (hook, n)]
                pipe.execute_command("EVAL", _TAKE, 1, self.store.tenant_base(tenant_id), round(now * 1000), lease, *wanted)
            return pipe.execute()

        jobs = []
        for tenant_id, flat in zip(tenant_ids, self.store._call(run) if tenant_ids else []):
            for i in range(0, len(flat), 3):
                state = json.loads(flat[i + 1])
                jobs.append(Job(tenant_id, _text(flat[i]), state["w"], state["e"], int(state["n"]), int(state["first"]), lease,
                                _text(flat[i + 2])))
        return jobs

    def settle(self, job: Job, outcome: str, state: str = "", due: float = 0.0) -> bool:
        """Record what became of a taken job ('done', 'retry' due then with `state`, or 'dead' at `due`); False if it was taken over."""
        args = [job.id, job.lease_ms, round(due * 1000), state, outcome, MAX_DEAD, job.webhook_id]
        return bool(self.store._call(lambda: self.store._script(_SETTLE, [self.store.tenant_base(job.tenant_id)], args)))

    def pending(self, tenant_ids: Iterable[str]) -> int:
        """Return how many deliveries wait in these tenants' outboxes."""
        ids = list(tenant_ids)

        def run() -> list[int]:
            pipe = self.store.client.pipeline(transaction=False)
            for tenant_id in ids:
                pipe.hlen(self.key(tenant_id, "outbox"))
            return pipe.execute()

        return sum(self.store._call(run)) if ids else 0
