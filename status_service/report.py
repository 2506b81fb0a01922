"""Pure report building: registered integrations and their states to the /status document."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Mapping, Sequence

from .model import Health, Integration, State

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


def row(integration: Integration, state: State | None, now: float) -> Row:
    """Return one integration's entry; a result older than its stale_after is unknown, reason stale."""
    if state is None:
        health, reason = Health.UNKNOWN, "not_checked_yet"
    elif now - state.checked_at > integration.probe.stale_after_s:
        health, reason = Health.UNKNOWN, "stale"
    else:
        health, reason = state.status, state.reason
    return {
        "id": integration.id,
        "status": health.value,
        "type": integration.type,
        "checked_at": iso(state.checked_at) if state else None,
        "latency_ms": state.latency_ms if state else None,
        "reason": reason,
    }


def summarize(rows: Sequence[Row], generated_at: str) -> dict[str, Any]:
    """Build the document around its rows: counts, percentages, per-type stats, overall status."""
    by_type: dict[str, list[int]] = {}  # type -> [healthy, total], in order of first appearance
    for entry in rows:
        counts = by_type.setdefault(entry["type"], [0, 0])
        counts[0] += entry["status"] == Health.HEALTHY.value
        counts[1] += 1
    healthy = sum(h for h, _ in by_type.values())
    return {
        "status": overall(healthy, len(rows)),
        "data": {
            "integrations": list(rows),
            "healthy_integrations_count": healthy,
            "total_integrations_count": len(rows),
            "healthy_percentage": percentage(healthy, len(rows)),
            "stats_by_integration_type": {
                kind: {
                    "total_count": t,
                    "healthy_count": h,
                    "healthy_percentage": percentage(h, t),
                    "status": overall(h, t),
                }
                for kind, (h, t) in by_type.items()
            },
            "generated_at": generated_at,
        },
    }


def build_report(integrations: Sequence[Integration], states: Mapping[str, State], now: float) -> dict[str, Any]:
    """Build the /status document for one tenant."""
    return summarize([row(i, states.get(i.id), now) for i in integrations], iso(now))


def stale_times(integrations: Sequence[Integration], states: Mapping[str, State]) -> dict[str, float]:
    """Return when each recorded result turns stale (epoch seconds), by integration id."""
    return {i.id: states[i.id].checked_at + i.probe.stale_after_s for i in integrations if i.id in states}


def next_stale(stale_at: Mapping[str, float], now: float) -> float:
    """Return when the next result still fresh now turns stale (infinity if none will)."""
    return min((at for at in stale_at.values() if at > now), default=float("inf"))


def expire(document: dict[str, Any], stale_at: Mapping[str, float], now: float) -> dict[str, Any]:
    """Mark the results that have turned stale since the document was built, and recount.

    This is how a dead prober fleet shows: nobody rebuilt the report, so its data ages into unknown.
    """
    rows = [
        {**entry, "status": Health.UNKNOWN.value, "reason": "stale"}
        if stale_at.get(entry["id"], float("inf")) < now
        else entry
        for entry in document["data"]["integrations"]
    ]
    return summarize(rows, document["data"]["generated_at"])


def encode(document: dict[str, Any]) -> bytes:
    """Serialize a report compactly, once, so serving it is a byte copy."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
