"""History in Redis: raw checks, rollups, series points and events, all per tenant (one hash slot).

Keys, under the tenant's base (see Store.tenant_base):
- `checks:<id>`: a stream of an integration's raw checks, written with its state (store.record) under ids
  that are their times in ms, trimmed by MINID;
- `r300:<id>`, `r3600:<id>`: sorted sets of its 5-minute and hourly rollups;
- `s60:<scope>`, `s300:<scope>`, `s3600:<scope>`: sorted sets of a scope's healthy-percentage points;
  both packed (see PACK): a member is "<pack start ms>|<entry>;<entry>...", each entry's start in
  seconds after the pack's, scored by the pack's start;
- `events` (+ `events:last`): a stream of transitions whose ids read as their time in ms;
- `history:cursor`: up to when the rollups and points are complete (ms); `history:late`: the earliest
  check written behind the cursor, so the next compaction goes back for it; `history:began`: the first
  check's time, before which there is no history (not a stretch of unknown);
- `history:folding`: the end of the stretch a compaction is folding, while it does;
- `history:keys`: the names of the keys above that exist (and of the webhooks' queues, store/webhooks.py),
  so a tenant's removal finds them all.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from ..model import State
from ..rollup import Bucket, Check, Point
from . import Store

MINUTE, FIVE_MINUTES, HOUR, DAY = 60, 300, 3600, 86400
# Rollups and points are packed, several to a sorted-set member (scored by the pack's start), so a key
# holds hundreds of members rather than thousands: a member costs its bytes plus some 70 of overhead.
PACK = {MINUTE: HOUR, FIVE_MINUTES: HOUR, HOUR: DAY}
CURSOR, LATE, BEGAN, FOLDING = "history:cursor", "history:late", "history:began", "history:folding"


@dataclass(frozen=True)
class Marks:
    """Where a tenant's compaction stands: its cursor, late mark and beginning (epoch s, or None), and its registry value."""

    cursor: float | None = None
    late: float | None = None
    began: float | None = None
    seeded: str = ""

# Write one tenant's compaction, unless something moved meanwhile: the tenant (deleted, made again,
# seeded anew), the cursor, or the late mark (a check written behind the fold, or into the stretch
# being folded: see history:folding). ARGV[1..5]: the cursor read, the new one, the late mark read,
# when history began (kept from the first compaction on), the tenant's registry value read. Then key,
# score, member triples, each replacing what its key holds at that score. After '--', key and oldest
# score to keep: a key "*s60" stands for every s60 key the tenant has (types come and go), and one
# starting with "~" for a stream (trimmed by MINID: a quiet one is written, and so trimmed, seldom).
_COMPACT = """
local base = KEYS[1]
local seeded = redis.call('GET', base .. 'registry')
if not seeded or seeded ~= ARGV[5] then return 0 end  -- deleted, made again or seeded anew meanwhile
if (redis.call('GET', base .. 'history:cursor') or '') ~= ARGV[1] then return 0 end
if (redis.call('GET', base .. 'history:late') or '') ~= ARGV[3] then return 0 end
redis.call('SET', base .. 'history:cursor', ARGV[2])
redis.call('SET', base .. 'history:began', ARGV[4], 'NX')
redis.call('DEL', base .. 'history:late', base .. 'history:folding')
local i = 6
while ARGV[i] ~= '--' do
  local key = base .. ARGV[i]
  local id = string.match(ARGV[i], '^r%d+:(.*)$')
  -- An integration removed meanwhile has no checks stream any more: its rollups are not written back.
  if not id or redis.call('EXISTS', base .. 'checks:' .. id) == 1 then
    redis.call('ZREMRANGEBYSCORE', key, ARGV[i + 1], ARGV[i + 1])
    redis.call('ZADD', key, ARGV[i + 1], ARGV[i + 2])
    redis.call('SADD', base .. 'history:keys', ARGV[i])
  end
  i = i + 3
end
local function trim(name, oldest)
  redis.call('ZREMRANGEBYSCORE', base .. name, '-inf', '(' .. oldest)
  if redis.call('EXISTS', base .. name) == 0 then redis.call('SREM', base .. 'history:keys', name) end
end
for j = i + 1, #ARGV, 2 do
  local name, oldest = ARGV[j], ARGV[j + 1]
  if string.sub(name, 1, 1) == '*' then
    local prefix = string.sub(name, 2) .. ':'
    for _, kept in ipairs(redis.call('SMEMBERS', base .. 'history:keys')) do
      if string.sub(kept, 1, #prefix) == prefix then trim(kept, oldest) end
    end
  elseif string.sub(name, 1, 1) == '~' then
    redis.call('XTRIM', base .. string.sub(name, 2), 'MINID', '~', oldest)
  else
    trim(name, oldest)
  end
end
return 1
"""


# Read the cursor and an integration's rollups in one step, so uptime never counts a fold twice.
_ROLLUPS = """
return {redis.call('GET', KEYS[1] .. 'history:cursor') or false,
        redis.call('ZRANGEBYSCORE', KEYS[1] .. 'r300:' .. ARGV[1], ARGV[2], '+inf'),
        redis.call('ZRANGEBYSCORE', KEYS[1] .. 'r3600:' .. ARGV[1], ARGV[3], '+inf')}
"""

_SHORT = {"healthy": "h", "unhealthy": "u", "unknown": "?", "maintenance": "m"}
_LONG = {v: k for k, v in _SHORT.items()}

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""


def check_text(state: State, ok: bool, maintenance: bool = False) -> str:
    """Return a raw check as the record script takes it: ms|ok|status|latency|reason (it keeps the ms as the entry's id).

    A check inside a maintenance window is kept with the status maintenance: out of uptime and percentages.
    """
    latency = "" if state.latency_ms is None else str(state.latency_ms)
    status = _SHORT["maintenance" if maintenance else state.status.value]
    return f"{round(state.checked_at * 1000)}|{int(ok)}|{status}|{latency}|{state.reason or ''}"


def parse_check(entry_id: str, text: str) -> Check:
    """Read a raw check back from its stream entry."""
    ok, status, latency, reason = text.split("|", 3)
    return Check(int(entry_id.split("-")[0]) / 1000, ok == "1", _LONG[status], int(latency) if latency else None, reason or None)


def event_text(at: float, scope: str, integration: Mapping[str, str] | None, previous: str, current: str,
               reason: str | None, extra: Mapping[str, Any] | None = None) -> str:
    """Return an event as kept on the tenant's stream: its time in ms, a space, then its JSON (`extra` fields last)."""
    body = {"scope": scope, "integration": integration, "previous": previous, "current": current, "reason": reason, **(extra or {})}
    return f"{round(at * 1000)} {json.dumps(body, separators=(',', ':'))}"


@dataclass(frozen=True)
class Event:
    """One transition as the events feed shows it."""

    id: str
    body: dict[str, Any]

    @property
    def at(self) -> float:
        """Return the event's time (its id's ms)."""
        return int(self.id.split("-")[0]) / 1000


class History:
    """Everything of history that Redis keeps, over the Store's client and key space."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def key(self, tenant_id: str, name: str) -> str:
        """Return the full name of one of a tenant's history keys (see the module's docstring)."""
        return self.store.tenant_base(tenant_id) + name

    # -- reads -----------------------------------------------------------------------------------
    def checks(self, tenant_id: str, ids: Sequence[str], since: float) -> dict[str, list[Check]]:
        """Return each integration's raw checks from `since` (epoch s) on, and the one before it: the status at `since`."""
        at = max(1, int(since * 1000))

        def run() -> list[Any]:
            pipe = self.store.client.pipeline(transaction=False)
            for iid in ids:
                key = self.key(tenant_id, f"checks:{iid}")
                pipe.xrevrange(key, max=f"({at}-0", count=1)
                pipe.xrange(key, min=f"{at}-0")
            return pipe.execute()

        replies = self.store._call(run) if ids else []
        out = {}
        for n, iid in enumerate(ids):
            raw = replies[2 * n] + replies[2 * n + 1]  # ids are the checks' times: in order
            out[iid] = [parse_check(_text(eid), _text(fields[b"c"])) for eid, fields in raw]
        return out

    def packs(self, tenant_id: str, names: Sequence[str], since: float, until: float = math.inf) -> dict[str, list[Any]]:
        """Return the rollups or points (by key name, like r300:<id> or s60:<scope>) that start within [since, until)."""
        def run() -> list[Any]:
            pipe = self.store.client.pipeline(transaction=False)
            for name in names:
                pack = PACK[size_of(name)]
                low = math.floor(since / pack) * pack
                pipe.zrangebyscore(self.key(tenant_id, name), round(low * 1000), "+inf" if math.isinf(until) else f"({round(until * 1000)}")
            return pipe.execute()

        replies = self.store._call(run) if names else []
        out = {}
        for name, members in zip(names, replies):
            kind = Point if name.startswith("s") else Bucket
            entries = [e for m in members for e in _unpack(_text(m), kind)]
            out[name] = [e for e in entries if since <= e.start < until]
        return out

    def buckets(self, tenant_id: str, integration_id: str, size_s: int, since: float) -> list[Bucket]:
        """Return an integration's rollups of size_s that start at or after `since`."""
        name = f"r{size_s}:{integration_id}"
        return self.packs(tenant_id, [name], since)[name]

    def points(self, tenant_id: str, scope: str, size_s: int, since: float, until: float) -> list[Point]:
        """Return a scope's points of size_s that start within [since, until)."""
        name = f"s{size_s}:{scope}"
        return self.packs(tenant_id, [name], since, until)[name]

    def cursor(self, tenant_id: str) -> float | None:
        """Return up to when a tenant's history is folded (epoch s), or None."""
        return self.marks([tenant_id])[tenant_id].cursor

    def marks(self, tenant_ids: Sequence[str]) -> dict[str, Marks]:
        """Return where each tenant's compaction stands, in one round trip."""
        def run() -> list[Any]:
            pipe = self.store.client.pipeline(transaction=False)
            for tenant_id in tenant_ids:
                for mark in (CURSOR, LATE, BEGAN):  # no MGET: a cluster pipeline refuses it
                    pipe.get(self.key(tenant_id, mark))
                pipe.get(self.store.registry_key(tenant_id))
            return pipe.execute()

        raw = self.store._call(run) if tenant_ids else []
        out = {}
        for n, tenant_id in enumerate(tenant_ids):
            cursor, late, began, seeded = raw[4 * n:4 * n + 4]
            out[tenant_id] = Marks(*(int(v) / 1000 if v else None for v in (cursor, late, began)), _text(seeded) if seeded else "")
        return out

    def folding(self, tenant_id: str, end: float, ttl_s: float) -> None:
        """Say that [cursor, end) is being folded: a check written into it from now on is marked late."""
        self.store._call(lambda: self.store.client.set(self.key(tenant_id, FOLDING), round(end * 1000), px=int(ttl_s * 1000)))

    def events(self, tenant_id: str, start: str | None, limit: int) -> list[Event]:
        """Return up to `limit` events from the id `start` on (oldest first; "(" before it: after it), or the newest `limit`."""
        key = self.key(tenant_id, "events")
        if start is None:
            raw = list(reversed(self.store._call(lambda: self.store.client.xrevrange(key, count=limit))))
        else:
            raw = self.store._call(lambda: self.store.client.xrange(key, min=start, count=limit))
        return [Event(_text(eid), json.loads(_text(fields[b"e"]).split(" ", 1)[1])) for eid, fields in raw]

    def state(self, tenant_id: str, integration_id: str) -> State | None:
        """Return an integration's recorded state, if it has one."""
        raw = self.store._call(lambda: self.store.client.hget(self.store.results_key(tenant_id), integration_id))
        return State.from_json(json.loads(raw)) if raw else None

    def rollups(self, tenant_id: str, integration_id: str, fives_since: float, hours_since: float) -> tuple[float | None, list[Bucket], list[Bucket]]:
        """Return, read in one step, the cursor and an integration's 5-minute and hourly rollups since those times."""
        reply = self.store._call(lambda: self.store._script(_ROLLUPS, [self.store.tenant_base(tenant_id)], [
            integration_id, round(math.floor(fives_since / PACK[FIVE_MINUTES]) * PACK[FIVE_MINUTES] * 1000),
            round(math.floor(hours_since / PACK[HOUR]) * PACK[HOUR] * 1000)]))
        cursor, fives, hours = reply
        return (int(cursor) / 1000 if cursor else None,
                [b for m in fives for b in _unpack(_text(m), Bucket) if b.start >= fives_since],
                [b for m in hours for b in _unpack(_text(m), Bucket) if b.start >= hours_since])

    def last_checks(self, tenant_id: str, integration_id: str, count: int) -> list[Check]:
        """Return an integration's newest raw checks, newest first."""
        raw = self.store._call(lambda: self.store.client.xrevrange(self.key(tenant_id, f"checks:{integration_id}"), count=count))
        return [parse_check(_text(eid), _text(fields[b"c"])) for eid, fields in raw]

    # -- compaction --------------------------------------------------------------------------------
    def lock(self, tenant_id: str, holder: str, ttl_s: float) -> bool:
        """Take a tenant's compaction for ttl_s unless another prober holds it: spares doing it twice."""
        return bool(self.store._call(lambda: self.store.client.set(
            self.key(tenant_id, "history:lock"), holder, nx=True, px=int(ttl_s * 1000))))

    def unlock(self, tenant_id: str, holder: str) -> None:
        """Release a tenant's compaction, if this holder still has it (a pass that outlived its lock does not)."""
        self.store._call(lambda: self.store._script(_UNLOCK, [self.key(tenant_id, "history:lock")], [holder]))

    def write(self, tenant_id: str, marks: Marks, new_cursor: float, began: float,
              rows: Iterable[tuple[str, float, str]], trims: Mapping[str, float]) -> bool:
        """Replace rollups and points (key name, start, member) and move the cursor, unless anything moved meanwhile."""
        args: list[Any] = ["" if marks.cursor is None else str(round(marks.cursor * 1000)), str(round(new_cursor * 1000)),
                           "" if marks.late is None else str(round(marks.late * 1000)), str(round(began * 1000)), marks.seeded]
        for name, start, member in rows:
            args += [name, round(start * 1000), member]
        args.append("--")
        for name, oldest in trims.items():
            args += [name, round(oldest * 1000)]
        base = self.store.tenant_base(tenant_id)
        return bool(self.store._call(lambda: self.store._script(_COMPACT, [base], args)))


def packed(name: str, entries: Iterable[Any]) -> list[tuple[str, float, str]]:
    """Return the rows (key name, pack start, member) that store these rollups or points of one key."""
    pack = PACK[size_of(name)]
    groups: dict[float, list[Any]] = {}
    for e in entries:
        groups.setdefault(math.floor(e.start / pack) * pack, []).append(e)
    return [(name, start, f"{round(start * 1000)}|" + ";".join(e.encode(start) for e in group)) for start, group in sorted(groups.items())]


def _unpack(member: str, kind: type) -> list[Any]:
    start, _, body = member.partition("|")
    origin = int(start) / 1000
    return [kind.decode(text, origin) for text in body.split(";") if text]


def size_of(name: str) -> int:
    """Return the resolution in seconds of a rollup or points key name: r300:<id> is 300."""
    return int(name[1:].split(":", 1)[0])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
