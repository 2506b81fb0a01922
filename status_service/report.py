"""Pure report building: registered integrations and their states to the /status document."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

from .model import Health, Integration, State


def percentage(healthy: int, total: int) -> float:
    """Return the healthy share in percent, rounded to 2 decimals; 100.0 when there is nothing."""
    return 100.0 if total == 0 else round(100.0 * healthy / total, 2)


def overall(healthy: int, total: int) -> str:
    """Return ok when all are healthy, unhealthy when none is, degraded otherwise."""
    if healthy == total:
        return "ok"
    return "unhealthy" if healthy == 0 else "degraded"


def iso(epoch: float | None) -> str | None:
    """Return an epoch time as an ISO 8601 UTC string."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def effective(integration: Integration, state: State | None, now: float) -> tuple[Health, str | None]:
    """Return the health to report and its reason; a result older than stale_after is unknown."""
    if state is None:
        return Health.UNKNOWN, "not_checked_yet"
    if now - state.checked_at > integration.probe.stale_after_s:
        return Health.UNKNOWN, "stale"
    return state.status, state.reason


def build_report(integrations: Sequence[Integration], states: Mapping[str, State], now: float) -> dict[str, Any]:
    """Build the /status document for one tenant."""
    rows: list[dict[str, Any]] = []
    by_type: dict[str, list[int]] = {}  # type -> [healthy, total], in registration order
    for integration in integrations:
        state = states.get(integration.id)
        health, reason = effective(integration, state, now)
        healthy = health is Health.HEALTHY
        counts = by_type.setdefault(integration.type, [0, 0])
        counts[0] += healthy
        counts[1] += 1
        rows.append(
            {
                "id": integration.id,
                "status": health.value,
                "type": integration.type,
                "checked_at": iso(state.checked_at) if state else None,
                "latency_ms": state.latency_ms if state else None,
                "reason": reason,
            }
        )
    healthy_total = sum(h for h, _ in by_type.values())
    return {
        "status": overall(healthy_total, len(rows)),
        "data": {
            "integrations": rows,
            "healthy_integrations_count": healthy_total,
            "total_integrations_count": len(rows),
            "healthy_percentage": percentage(healthy_total, len(rows)),
            "stats_by_integration_type": {
                kind: {
                    "total_count": total,
                    "healthy_count": healthy,
                    "healthy_percentage": percentage(healthy, total),
                    "status": overall(healthy, total),
                }
                for kind, (healthy, total) in by_type.items()
            },
            "generated_at": iso(now),
        },
    }


def valid_until(integrations: Sequence[Integration], states: Mapping[str, State]) -> float:
    """Return when the first result in this report turns stale (infinity if none can)."""
    times = [
        states[i.id].checked_at + i.probe.stale_after_s for i in integrations if i.id in states
    ]
    return min(times, default=float("inf"))


def encode(document: dict[str, Any]) -> bytes:
    """Serialize a report compactly, once, so serving it is a byte copy."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
