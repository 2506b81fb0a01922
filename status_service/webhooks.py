"""Pure webhook rules: which events a webhook gets, the payload, its signature, and when to try again."""
from __future__ import annotations

import hashlib
import hmac
import json
import random
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

from . import reasons

EVENT_TYPES = ("integration.unhealthy", "integration.healthy", "status.changed", "type.changed",
               "integration.flapping", "provider.incident")
SIGNATURE_HEADER = "Status-Signature"
MAX_DELAY_S = 3600.0  # retries double up to this apart


def event_type(body: Mapping[str, Any]) -> str | None:
    """Return the webhook event type of an events-feed entry, or None when it is no alert.

    An integration's first result is a change from unknown: unhealthy is news, healthy is not. A
    change while it flaps is held; the one that starts it flapping, and the probe that finds it
    settled, are one alert each.
    """
    scope = body.get("scope")
    if scope == "integration":
        if body.get("maintenance"):
            return None  # inside a maintenance window
        if body.get("flapping"):
            return "integration.flapping"
        if body.get("held") or (body.get("previous") == "unknown" and body.get("current") == "healthy"):
            return None  # flapping: held until it settles
        return f"integration.{body.get('current')}" if body.get("current") in ("healthy", "unhealthy") else None
    if scope == "status":
        return "status.changed"
    if scope == "type":
        return "type.changed"
    if scope == "provider":
        return "provider.incident"  # suspected (current) or over (previous): once per tenant of the provider
    return None


def wanted(events: Sequence[str], categories: Sequence[str], kind: str | None, body: Mapping[str, Any]) -> bool:
    """Return whether a webhook subscribed to `events` and `categories` (each empty: all) wants an event of type `kind`.

    Categories sort failures: an event whose reason has one (an integration's failure) goes only to a
    webhook that wants that category; one without (a recovery, a status or type change) goes by type alone.
    """
    if kind is None or (events and kind not in events):
        return False
    category = _category(body)
    return not categories or category is None or category in categories


def payload(event_id: str, kind: str, at: float, tenant_id: str, body: Mapping[str, Any]) -> bytes:
    """Return the JSON a receiver gets for one event; it holds no credential (an event has none)."""
    document: dict[str, Any] = {
        "id": event_id,
        "type": kind,
        "occurred_at": datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "tenant": tenant_id,
        "integration": body.get("integration"),
        "previous": body.get("previous"),
        "current": body.get("current"),
        "reason": body.get("reason"),
        "reason_category": _category(body),
    }
    if body.get("scope") == "type":
        document["integration_type"] = body.get("type")
    if body.get("scope") == "provider":
        document["provider"] = body.get("provider")
    if body.get("flapping") or body.get("settled"):
        document["flapping"] = bool(body.get("flapping"))  # began to flap, or settled (previous: before it began)
    return json.dumps(document, separators=(",", ":")).encode()


def _category(body: Mapping[str, Any]) -> str | None:
    """Return an event's reason category: as recorded with it (which knows whether its provider had trouble then), or its reason's."""
    return body["reason_category"] if "reason_category" in body else reasons.category(body.get("reason"))


def signature(secret: str, at: int, body: bytes) -> str:
    """Return the Status-Signature header value: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>."""
    mac = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


def retry_delay(attempts: int, first_s: float, rand: random.Random | None = None) -> float:
    """Return how long to wait after the n-th failed attempt: first_s, doubling, capped, with jitter.

    The jitter takes up to half off, so the first retry comes within first_s and retries of one
    outage spread out rather than arrive together.
    """
    base = min(MAX_DELAY_S, first_s * 2 ** max(0, attempts - 1))
    return base * (rand or random).uniform(0.5, 1.0)
