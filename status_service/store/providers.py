"""What the prober fleet shares about each provider, in Redis: its request budget and its status page.

Keys, each provider's in a slot of its own:
  P{prov:NAME}:rate       hash {tokens, at (ms)}: a token bucket that caps the provider's checks across
                          every tenant and prober at providers.<name>.max_requests_per_second, holding
                          at most one second's worth
  P{prov:NAME}:page       hash {indicator, description, url, checked_at}: what its status page said
                          last; gone PAGE_KEPT_S after the last poll, so a page nobody polls is unknown
  P{prov:NAME}:page:lease str: held by the prober polling the page this interval, so the fleet polls once
  P{prov:NAME}:seen       zset TENANT<US>ID -> ms of its last result: the provider's integrations at work
  P{prov:NAME}:failing    zset TENANT<US>ID -> ms of its last failure that may be the provider's (a reason
                          outside credentials and account), within the window; a success or another
                          failure takes it out
  P{prov:NAME}:failing:tenants hash TENANT -> how many of its integrations are in failing
  P{prov:NAME}:seen:tenants zset TENANT -> ms of its last result
  P{prov:NAME}:suspect    hash {since, last (ms)}: present while a provider incident is suspected
  P{prov:NAME}:told       zset TENANT: the tenants told it started, each to be told once that it ended
One call per provider: the cost per tick is O(providers), not O(checks).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from . import _EVENT_LUA, Store, _text

PAGE_KEPT_S = 600

# Take up to ARGV[1] tokens at ARGV[2] (ms) from a bucket refilled at ARGV[3] per second, holding at
# most ARGV[4]. A clock behind the bucket's (another prober's) refills nothing. Returns the count taken.
_TAKE = """
local held = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local rate, burst, now = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[2])
local tokens, at = tonumber(held[1]) or burst, tonumber(held[2]) or now
if now > at then tokens = math.min(burst, tokens + (now - at) * rate / 1000); at = now end
local taken = math.min(tonumber(ARGV[1]), math.floor(tokens))
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - taken), 'at', tostring(at))
-- Kept until it would be full again anyway: an idle bucket that expired sooner would come back full early.
redis.call('PEXPIRE', KEYS[1], math.max(60000, math.ceil(burst / rate * 1000) + 1000))
return taken
"""


# Record results of one provider's checks (ARGV[6..]: member, tenant, 1 if a failure that may be the
# provider's else 0, ...) at ARGV[1] (ms), then decide: within the window ARGV[2] (ms), at least ARGV[3]
# tenants and a share ARGV[4] of the integrations at work failing is a suspected incident, which ends
# one window after its last such failure. ARGV[5]: the ms before which a member last seen is forgotten.
# Returns {state, tenants...}: 'started' with every tenant at work, 'on' with tenants seen for the first
# time since it started, 'ended' with every tenant told it had started, or 'off'. Each tenant is told
# once of each edge, whichever prober's call finds it.
_CORRELATE = """
local base, now, window = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
-- failing: member -> ms of its failure; failing:tenants: tenant -> how many of its members are in failing.
local function drop(member)
  if redis.call('ZREM', base .. 'failing', member) == 1 then
    local tenant = string.match(member, '^(.-)\\31')
    if redis.call('HINCRBY', base .. 'failing:tenants', tenant, -1) <= 0 then redis.call('HDEL', base .. 'failing:tenants', tenant) end
  end
end
for i = 6, #ARGV, 3 do
  redis.call('ZADD', base .. 'seen', now, ARGV[i])
  redis.call('ZADD', base .. 'seen:tenants', now, ARGV[i + 1])
  if ARGV[i + 2] == '1' then
    if redis.call('ZADD', base .. 'failing', now, ARGV[i]) == 1 then redis.call('HINCRBY', base .. 'failing:tenants', ARGV[i + 1], 1) end
  else
    drop(ARGV[i])
  end
end
local since = now - window
redis.call('ZREMRANGEBYSCORE', base .. 'seen', '-inf', '(' .. ARGV[5])
redis.call('ZREMRANGEBYSCORE', base .. 'seen:tenants', '-inf', '(' .. ARGV[5])
for _, member in ipairs(redis.call('ZRANGEBYSCORE', base .. 'failing', '-inf', '(' .. since)) do drop(member) end
local failing, total = redis.call('ZCARD', base .. 'failing'), redis.call('ZCARD', base .. 'seen')
-- Tenants failing now, each counted once: one large tenant's failures are never an incident of their own.
local qualifies = total > 0 and redis.call('HLEN', base .. 'failing:tenants') >= tonumber(ARGV[3]) and failing >= tonumber(ARGV[4]) * total
local held = redis.call('HGET', base .. 'suspect', 'last')
if qualifies then redis.call('HSET', base .. 'suspect', 'last', now) end
if qualifies and not held then
  redis.call('HSET', base .. 'suspect', 'since', now)
  local out = {'started'}
  for _, tenant in ipairs(redis.call('ZRANGE', base .. 'seen:tenants', 0, -1)) do
    redis.call('ZADD', base .. 'told', now, tenant)
    out[#out + 1] = tenant
  end
  return out
end
if held and not qualifies and tonumber(held) + window < now then
  local out = {'ended'}
  for _, tenant in ipairs(redis.call('ZRANGE', base .. 'told', 0, -1)) do out[#out + 1] = tenant end
  redis.call('DEL', base .. 'suspect', base .. 'told')
  return out
end
if not held and not qualifies then return {'off'} end
local out = {'on'}
for i = 6, #ARGV, 3 do
  if not redis.call('ZSCORE', base .. 'told', ARGV[i + 1]) then
    redis.call('ZADD', base .. 'told', now, ARGV[i + 1])
    out[#out + 1] = ARGV[i + 1]
  end
end
return out
"""


# A tenant removed meanwhile (its registry gone) gets nothing: no key of it is made again.
_ANNOUNCE = _EVENT_LUA + """
local seeded = redis.call('GET', KEYS[1] .. 'registry')
if not seeded or string.sub(seeded, 1, 5) == 'gone:' then return 0 end
add_event(KEYS[1], ARGV[1], ARGV[2])
return 1
"""


class Providers:
    """The providers' shared state, over the Store's client and key space."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def key(self, provider: str, name: str) -> str:
        """Return the key of one provider's `name` (rate, ...), in a slot of that provider's own."""
        return f"{self.store.prefix}{{prov:{provider}}}:{name}"

    def _each(self, names: list[str], command: Callable[[Any, str], Any]) -> list[Any]:
        """Run `command(pipeline, name)` for each name in one round trip (the names' keys may be in different slots)."""
        if not names:
            return []

        def run() -> list[Any]:
            pipe = self.store.client.pipeline(transaction=False)
            for name in names:
                command(pipe, name)
            return pipe.execute()

        return self.store._call(run)

    def take(self, wanted: Mapping[str, tuple[int, float]], now: float) -> dict[str, int]:
        """Take request tokens: provider -> (how many wanted, its rate per second); return provider -> how many granted."""
        names = list(wanted)
        found = self._each(names, lambda pipe, name: pipe.execute_command(
            "EVAL", _TAKE, 1, self.key(name, "rate"), wanted[name][0], round(now * 1000), wanted[name][1], max(wanted[name][1], 1.0)))
        return {name: int(n) for name, n in zip(names, found)}

    def claim_page(self, provider: str, interval_s: float) -> bool:
        """Return whether this prober is the one to poll the provider's status page now (once per interval, fleet-wide)."""
        key = self.key(provider, "page:lease")
        return bool(self.store._call(lambda: self.store.client.set(key, "1", nx=True, px=max(1, round(interval_s * 1000)))))

    def put_page(self, provider: str, said: Mapping[str, str]) -> None:
        """Keep what the provider's status page said."""
        key = self.key(provider, "page")

        def run() -> None:
            pipe = self.store.client.pipeline(transaction=True)
            pipe.delete(key)
            pipe.hset(key, mapping=dict(said))
            pipe.expire(key, PAGE_KEPT_S)
            pipe.execute()

        self.store._call(run)

    def pages(self, providers: Iterable[str]) -> dict[str, dict[str, str]]:
        """Return what each provider's status page said last (none kept: left out)."""
        names = list(providers)
        found = self._each(names, lambda pipe, name: pipe.hgetall(self.key(name, "page")))
        return {name: {_text(k): _text(v) for k, v in said.items()} for name, said in zip(names, found) if said}

    def correlate(self, results: Mapping[str, list[tuple[str, str, bool]]], now: float, window_s: float, min_tenants: int,
                  min_share: float, forget_s: float) -> dict[str, tuple[str, list[str]]]:
        """Record each provider's results (member, tenant, whether a failure that may be the provider's), and say per provider
        whether an incident is suspected ('started', 'on', 'ended', 'off') with the tenants to tell of its start or end now."""
        names, now_ms = list(results), round(now * 1000)
        found = self._each(names, lambda pipe, name: pipe.execute_command(
            "EVAL", _CORRELATE, 1, self.key(name, ""), now_ms, round(window_s * 1000), min_tenants, min_share, now_ms - round(forget_s * 1000),
            *[x for member, tenant, failed in results[name] for x in (member, tenant, "1" if failed else "0")]))
        return {name: (_text(said[0]), [_text(t) for t in said[1:]]) for name, said in zip(names, found)}

    def announce(self, tenant_ids: Iterable[str], text: str, events_min_ms: int) -> None:
        """Append one event (its feed text) to each tenant's events feed."""
        self._each(list(tenant_ids), lambda pipe, tenant_id: pipe.execute_command(
            "EVAL", _ANNOUNCE, 1, self.store.tenant_base(tenant_id), events_min_ms, text))
