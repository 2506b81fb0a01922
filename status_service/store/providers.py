"""What the prober fleet shares about each provider, in Redis: its request budget and its status page.

Keys, each provider's in a slot of its own:
  P{prov:NAME}:rate       hash {tokens, at (ms)}: a token bucket that caps the provider's checks across
                          every tenant and prober at providers.<name>.max_requests_per_second, holding
                          at most one second's worth
  P{prov:NAME}:page       hash {indicator, description, url, checked_at}: what its status page said
                          last; gone PAGE_KEPT_S after the last poll, so a page nobody polls is unknown
  P{prov:NAME}:page:lease str: held by the prober polling the page this interval, so the fleet polls once
One call per provider: the cost per tick is O(providers), not O(checks).
"""
from __future__ import annotations

from typing import Iterable, Mapping

from . import Store, _text

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
redis.call('PEXPIRE', KEYS[1], 60000)
return taken
"""


class Providers:
    """The providers' shared state, over the Store's client and key space."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def key(self, provider: str, name: str) -> str:
        """Return the key of one provider's `name` (rate, ...), in a slot of that provider's own."""
        return f"{self.store.prefix}{{prov:{provider}}}:{name}"

    def take(self, wanted: Mapping[str, tuple[int, float]], now: float) -> dict[str, int]:
        """Take request tokens: provider -> (how many wanted, its rate per second); return provider -> how many granted."""
        names = list(wanted)
        if not names:
            return {}

        def run() -> list[int]:
            pipe = self.store.client.pipeline(transaction=False)
            for name in names:
                count, rate = wanted[name]
                pipe.execute_command("EVAL", _TAKE, 1, self.key(name, "rate"), count, round(now * 1000), rate, max(rate, 1.0))
            return pipe.execute()

        return {name: int(n) for name, n in zip(names, self.store._call(run))}

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
        if not names:
            return {}

        def run() -> list[dict]:
            pipe = self.store.client.pipeline(transaction=False)
            for name in names:
                pipe.hgetall(self.key(name, "page"))
            return pipe.execute()

        return {name: {_text(k): _text(v) for k, v in found.items()} for name, found in zip(names, self.store._call(run)) if found}
