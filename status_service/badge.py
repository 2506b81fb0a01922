"""The badge: a small SVG of a tenant's overall status, for README embeds (pure)."""
from __future__ import annotations

from html import escape

COLOURS = {"ok": "#2e7d32", "degraded": "#b26a00", "unhealthy": "#c62828", "unknown": "#616161"}
# Each status also has a mark of its own, so the badge reads without colour.
MARKS = {"ok": "\u2713", "degraded": "!", "unhealthy": "\u2717", "unknown": "?"}
CHAR_PX = 7  # an approximate width of one character at 11 px Verdana


def render(status: str, label: str = "status") -> bytes:
    """Return the badge of an overall status (ok, degraded, unhealthy; anything else shows as unknown)."""
    status = status if status in COLOURS else "unknown"
    value = f"{MARKS[status]} {status}"
    left, right = 10 + CHAR_PX * len(label), 10 + CHAR_PX * len(value)
    label, value = escape(label), escape(value)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + right}" height="20" role="img" aria-label="{label}: {value}">'
        f"<title>{label}: {value}</title>"
        f'<rect width="{left}" height="20" fill="#555"/><rect x="{left}" width="{right}" height="20" fill="{COLOURS[status]}"/>'
        f'<g fill="#fff" text-anchor="middle" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11">'
        f'<text x="{left / 2}" y="14">{label}</text><text x="{left + right / 2}" y="14">{value}</text></g></svg>'
    ).encode()
