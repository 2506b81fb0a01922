"""Pure report building: registered integrations and their states to the /status document."""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Collection, Mapping, Sequence

from . import reasons
from .model import Health, Integration, State, Window

Row = dict[str, Any]
_CENT = Decimal("0.01")


def percentage(healthy: int, total: int) -> float:
    """Return the healthy share in percent, rounded half-up to 2 decimals; 100.0 when there is nothing."""
    if total == 0:
        return 100.0
    # Exact decimal arithmetic: float division and round() would turn 1 of 32 (3.125) into 3.12.
    return float((Decimal(100 * healthy) / Decimal(total)).quantize(_CENT, rounding=ROUND_HALF_UP))


def overall(healthy: int, total: int) -> str:
    """Return ok when all are healthy, unhealthy when none is, degraded otherwise."""
    if healthy == total:
        return "ok"
    return "unhealthy" if healthy == 0 else "degraded"


def iso(epoch: float) -> str:
    """Return an epoch time as an ISO 8601 UTC string."""
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def row(integration: Integration, state: State | None, now: float, maintenance: bool = False, suspected: bool = False) -> Row:
    """Return one integration's entry; a result older than its stale_after is unknown, reason stale.

    Inside a maintenance window it is `maintenance`, whatever its result. While its provider is
    `suspected` of an incident (by the fleet, or by its status page), a failure that may be the
    provider's is in category provider.
    """
    if maintenance:
        health, reason = Health.MAINTENANCE, "maintenance"
    elif state is None:
        health, reason = Health.UNKNOWN, "not_checked_yet"
    elif now - state.checked_at > integration.probe.stale_after(state.reason, state.wait_s):
        health, reason = Health.UNKNOWN, "stale"
    else:
        health, reason = state.status, state.reason
    entry = {
        "id": integration.id,
        "status": health.value,
        "type": integration.type,
        "checked_at": iso(state.checked_at) if state else None,
        "latency_ms": state.latency_ms if state else None,
        "reason": reason,
        "reason_category": reasons.category_while(reason, suspected and health in (Health.HEALTHY, Health.UNHEALTHY)),
    }
    if state is not None and health in (Health.HEALTHY, Health.UNHEALTHY):
        if state.held is not None:
            entry["flapping"] = True  # present only while it flaps
        if state.balance is not None:  # present only where the provider reports one
            entry["balance"] = state.balance
            low = integration.probe.low_balance
            if health is Health.HEALTHY and low is not None and state.balance < low:
                entry["reason"], entry["reason_category"] = "low_balance", reasons.category("low_balance")  # a hint: still healthy
    return entry


def summarize(rows: Sequence[Row], generated_at: str, notes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Build the document around its rows: counts, percentages, per-type stats (with `notes`: type -> provider_status), overall status."""
    by_type: dict[str, list[int]] = {}  # type -> [healthy, total], in order of first appearance
    for entry in rows:
        counts = by_type.setdefault(entry["type"], [0, 0])
        counted = entry["status"] != Health.MAINTENANCE.value  # maintenance: in no count
        counts[0] += counted and entry["status"] == Health.HEALTHY.value
        counts[1] += counted
    return _document(list(rows), by_type, generated_at, notes)


def _document(rows: list[Row], by_type: Mapping[str, list[int]], generated_at: str, notes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    healthy = sum(h for h, _ in by_type.values())
    total = sum(t for _, t in by_type.values())
    return {
        "status": overall(healthy, total),
        "data": {
            "integrations": rows,
            "healthy_integrations_count": healthy,
            "total_integrations_count": total,
            "healthy_percentage": percentage(healthy, total),
            "stats_by_integration_type": {
                kind: {
                    "total_count": t,
                    "healthy_count": h,
                    "healthy_percentage": percentage(h, t),
                    "status": overall(h, t),
                    **({"provider_status": notes[kind]} if notes and kind in notes else {}),  # only while its provider has trouble
                }
                for kind, (h, t) in by_type.items()
                if t  # a type whose integrations are all in maintenance has no stats
            },
            "generated_at": generated_at,
        },
    }


def build_report(integrations: Sequence[Integration], states: Mapping[str, State], now: float,
                 windows: Sequence[Window] = (), notes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Build the /status document for one tenant."""
    return summarize([row(i, states.get(i.id), now, any(w.covers(i, now) for w in windows)) for i in integrations], iso(now), notes)


def next_stale(stale_at: Mapping[str, float], now: float) -> float:
    """Return when the next result still fresh now turns stale (infinity if none will)."""
    return min((at for at in stale_at.values() if at > now), default=float("inf"))


def expire(document: dict[str, Any], stale_at: Mapping[str, float], now: float) -> dict[str, Any]:
    """Mark the results that have turned stale since the document was built, and recount.

    This is how a dead prober fleet shows: nobody rebuilt the report, so its data ages into unknown.
    """
    rows = [
        {**{k: v for k, v in entry.items() if k not in ("flapping", "balance")}, "status": Health.UNKNOWN.value, "reason": "stale",
         "reason_category": None}
        # No result: not stale. In maintenance: out of the counts whatever its result.
        if stale_at.get(entry["id"], float("inf")) < now and entry["checked_at"] is not None
        and entry["status"] != Health.MAINTENANCE.value
        # Fresh: its own reason's category, as provider trouble is no longer known (provider_status goes too, below).
        else {**entry, "reason_category": reasons.category(entry.get("reason"))} if "reason_category" in entry
        else entry
        for entry in document["data"]["integrations"]
    ]
    # provider_status goes too: nobody has read the pages or the fleet's failures since.
    return summarize(rows, document["data"]["generated_at"])


def current(body: bytes, stale: bytes, until: float, now: float) -> dict[str, Any]:
    """Return a stored report's document as of `now`: aged by the clock if no prober rewrote it in time (`until` passed)."""
    document = json.loads(body)
    if until < now:
        document = expire(document, {iid: float(at) for iid, at in json.loads(stale).items()}, now)
    return document


def encode(document: dict[str, Any]) -> bytes:
    """Serialize a report compactly, once, so serving it is a byte copy."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


HEALTH_STATUS = {"ok": "pass", "degraded": "warn", "unhealthy": "fail"}


def health(document: Mapping[str, Any]) -> dict[str, Any]:
    """Return a /status document in the IETF health-check draft's format (application/health+json).

    pass, warn and fail stand for ok, degraded and unhealthy; each integration type is a check
    keyed "<type>:healthyPercentage", and the integrations' counts are a check of their own.
    """
    data = document["data"]
    at = data["generated_at"]
    checks: dict[str, list[dict[str, Any]]] = {
        f"{kind}:healthyPercentage": [{
            "componentId": kind, "componentType": "integration-type", "observedValue": stats["healthy_percentage"],
            "observedUnit": "percent", "status": HEALTH_STATUS[stats["status"]], "time": at,
            "output": f"{stats['healthy_count']} of {stats['total_count']} healthy",
        }]
        for kind, stats in data["stats_by_integration_type"].items()
    }
    checks["integrations:healthyCount"] = [{
        "componentType": "integrations", "observedValue": data["healthy_integrations_count"], "observedUnit": "integrations",
        "status": HEALTH_STATUS[document["status"]], "time": at,
        "output": f"{data['healthy_integrations_count']} of {data['total_integrations_count']} healthy",
    }]
    return {"status": HEALTH_STATUS[document["status"]], "description": "health of this tenant's integrations",
            "checks": checks}


def tally(rows: Sequence[Row]) -> dict[str, dict[str, int]]:
    """Return how many integrations of each type have each status."""
    out: dict[str, dict[str, int]] = {}
    for entry in rows:
        by_status = out.setdefault(entry["type"], {})
        by_status[entry["status"]] = by_status.get(entry["status"], 0) + 1
    return out


def etag(body: bytes) -> str:
    """Return a report body's entity tag: a digest of its bytes (the same in Lua: see store/catalog.py)."""
    return hashlib.sha1(body).hexdigest()[:20]


class TenantReport:
    """One tenant's report kept current result by result: only the rows that change are re-rendered.

    Its body is byte for byte what encode(build_report(...)) gives for the same states; a prober
    keeps one per tenant, so a tenant of 10,000 integrations costs a join per result, not a rebuild.
    """

    def __init__(self, integrations: Sequence[Integration], windows: Sequence[Window] = ()) -> None:
        self.integrations = list(integrations)
        self.windows: tuple[Window, ...] = ()
        self._active: set[str] = set()  # the windows open as of the last body
        self._next_edge = float("inf")  # when a window next opens or closes
        self._index = {i.id: n for n, i in enumerate(self.integrations)}
        self.states: dict[str, State] = {}
        self.stale_at: dict[str, float] = {}  # id -> when its result turns stale
        self._rows = [row(i, None, 0.0) for i in self.integrations]
        self._encoded = [encode(r) for r in self._rows]
        self._counts: dict[str, list[int]] = {}  # type -> [healthy, total], in order of first appearance
        self._checked: set[str] = set()  # types with a result: the scopes whose statuses are events
        self._flapping: set[str] = set()  # ids whose state is flapping
        for i in self.integrations:
            self._counts.setdefault(i.type, [0, 0])[1] += 1
        self._next_stale = float("inf")  # no row needs ageing before this
        self.notes: dict[str, Any] = {}  # type -> provider_status, while its provider has trouble (set by the prober)
        self.suspected: set[str] = set()  # providers the fleet suspects of an incident
        if windows:
            self.set_windows(windows, 0.0)

    def set_suspected(self, providers: Collection[str], now: float) -> None:
        """Take the providers the fleet suspects of an incident, rendering again the rows of those that changed."""
        changed = self.suspected.symmetric_difference(providers)
        if not changed:
            return
        self.suspected = set(providers)
        for n, integration in enumerate(self.integrations):
            if integration.probe.provider in changed:
                self._render(n, now)

    def set_windows(self, windows: Sequence[Window], now: float) -> None:
        """Take the tenant's maintenance windows and render every row as of `now`."""
        self.windows = tuple(windows)
        self._edge(now)

    def _edge(self, now: float) -> None:
        """Render every row anew as the windows stand at `now`, and find the next edge."""
        self._active = {w.id for w in self.windows if w.starts_at <= now < w.ends_at}
        edges = [t for w in self.windows for t in (w.starts_at, w.ends_at) if t > now]
        self._next_edge = min(edges, default=float("inf"))
        for n in range(len(self.integrations)):
            integration = self.integrations[n]
            self._rows[n] = row(integration, self.states.get(integration.id), now, self._in_window(n, now),
                                integration.probe.provider in self.suspected)
            self._encoded[n] = encode(self._rows[n])
        self._recount()

    def _in_window(self, n: int, now: float) -> bool:
        return any(w.covers(self.integrations[n], now) for w in self.windows) if self.windows else False

    def next_edge(self) -> float:
        """Return when a maintenance window next opens or closes (infinity if none will)."""
        return self._next_edge
    def apply(self, states: Mapping[str, State], now: float) -> None:
        """Take newer states of some integrations (unknown ids are ignored)."""
        for iid, state in states.items():
            n = self._index.get(iid)
            if n is None:
                continue
            self.states[iid] = state
            self._checked.add(self.integrations[n].type)
            if state.held is not None:
                self._flapping.add(iid)
            else:
                self._flapping.discard(iid)
            self.stale_at[iid] = at = state.checked_at + self.integrations[n].probe.stale_after(state.reason, state.wait_s)
            self._render(n, now)
            if at >= now:
                self._next_stale = min(self._next_stale, at)

    def put(self, integration: Integration, now: float) -> None:
        """Add an integration at the end, or replace the one with its id in place; either starts unknown."""
        iid = integration.id
        self.states.pop(iid, None)
        self.stale_at.pop(iid, None)
        self._flapping.discard(iid)
        n = self._index.get(iid)
        if n is None:
            n = self._index[iid] = len(self.integrations)
            self.integrations.append(integration)
            self._rows.append(row(integration, None, now, self._in_window(n, now)))
            self._encoded.append(encode(self._rows[n]))
            # Last: its type's first appearance, if new.
            self._counts.setdefault(integration.type, [0, 0])[1] += self._rows[n]["status"] != Health.MAINTENANCE.value
            return
        self.integrations[n] = integration
        self._rows[n] = row(integration, None, now, self._in_window(n, now))
        self._encoded[n] = encode(self._rows[n])
        self._recount()

    def remove(self, integration_id: str) -> None:
        """Drop an integration and its result."""
        n = self._index.pop(integration_id, None)
        if n is None:
            return
        for rest in (self.integrations, self._rows, self._encoded):
            del rest[n]
        for later in self.integrations[n:]:
            self._index[later.id] -= 1
        self.states.pop(integration_id, None)
        self.stale_at.pop(integration_id, None)
        self._flapping.discard(integration_id)
        self._recount()

    def _recount(self) -> None:
        """Count each type afresh, in order of first appearance (a removal or a new type can change both)."""
        self._counts = {}
        self._checked = {self.integrations[self._index[iid]].type for iid in self.states}
        for integration, entry in zip(self.integrations, self._rows):
            counts = self._counts.setdefault(integration.type, [0, 0])
            counted = entry["status"] != Health.MAINTENANCE.value
            counts[0] += counted and entry["status"] == Health.HEALTHY.value
            counts[1] += counted

    def body(self, now: float) -> bytes:
        """Return the encoded document as of `now`, ageing results that have turned stale since."""
        if now >= self._next_edge:
            self._edge(now)
        if now > self._next_stale:
            self._next_stale = float("inf")
            for iid, at in self.stale_at.items():
                if at < now:
                    if self._rows[self._index[iid]]["reason"] != "stale":
                        self._render(self._index[iid], now)
                else:
                    self._next_stale = min(self._next_stale, at)
        head = encode(_document([], self._counts, iso(now), self.notes))
        # The rows are spliced in already encoded: the first '"integrations":[]' is that key's.
        return head.replace(b'"integrations":[]', b'"integrations":[' + b",".join(self._encoded) + b"]", 1)

    def tally(self) -> dict[str, dict[str, int]]:
        """Return how many integrations of each type have each status, as the last body said them."""
        return tally(self._rows)

    def statuses(self) -> dict[str, str]:
        """Return the overall status (key "") and each type's ("type:<type>"), as the last body said them.

        A scope none of whose integrations has a result yet is left out: "unhealthy" because nothing
        has been checked is no transition worth an event. A flapping integration counts as it was
        when it began to flap, so its flaps move no scope either; one in maintenance, as it was when
        its window began.
        """
        counts = {t: [h, n] for t, (h, n) in self._counts.items()}
        if self._active:  # one in maintenance counts as alerts last said it was: the window moves no scope
            for integration, entry in zip(self.integrations, self._rows):
                state = self.states.get(integration.id)
                if entry["status"] == Health.MAINTENANCE.value and state is not None:
                    was = state.paused_from or state.held or state.status.value
                    if was != Health.UNKNOWN.value:  # one made inside the window was never announced: out of the count
                        counts[integration.type][0] += was == Health.HEALTHY.value
                        counts[integration.type][1] += 1
        for iid in self._flapping:
            n, held = self._index[iid], self.states[iid].held
            if "flapping" in self._rows[n]:  # not gone stale meanwhile
                counts[self.integrations[n].type][0] += (held == Health.HEALTHY.value) - (self._rows[n]["status"] == Health.HEALTHY.value)
        out = {f"type:{t}": overall(h, n) for t, (h, n) in counts.items() if t in self._checked and n}
        if self._checked:
            out[""] = overall(sum(h for h, _ in counts.values()), sum(n for _, n in counts.values()))
        out.update({f"maintenance:{w}": "active" for w in self._active})  # each edge of a window is an event
        return out


    def _render(self, n: int, now: float) -> None:
        integration = self.integrations[n]
        was = self._rows[n]["status"]
        self._rows[n] = row(integration, self.states.get(integration.id), now, self._in_window(n, now),
                            integration.probe.provider in self.suspected)
        self._encoded[n] = encode(self._rows[n])
        counts, status = self._counts[integration.type], self._rows[n]["status"]
        counts[0] += (status == Health.HEALTHY.value) - (was == Health.HEALTHY.value)
        counts[1] += (status != Health.MAINTENANCE.value) - (was != Health.MAINTENANCE.value)
