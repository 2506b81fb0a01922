"""The status page's view of a report (pure): what each row says to a person, and the 24 h chart as SVG geometry."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping, Sequence

MARKS = {"ok": "\u2713", "degraded": "!", "unhealthy": "\u2717", "healthy": "\u2713", "unknown": "?", "maintenance": "\u2692"}
CHART_W, CHART_H = 720, 160  # the chart's drawing box; CSS scales it to the page's width


@dataclass(frozen=True)
class Chart:
    """The 24 h healthy percentage: an SVG path (empty without data) and a text alternative."""

    path: str
    summary: str
    points: int
    last: tuple[float, float] | None = None  # where the newest point is drawn: a mark, so even one point shows


def ago(iso: str | None, now: float) -> str:
    """Return how long ago an ISO 8601 time was, as a person says it ("12 s ago"); "never" for none."""
    if not iso:
        return "never"
    seconds = max(0, int(now - datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def chart(points: Sequence[Mapping[str, Any]], start: float, end: float) -> Chart:
    """Return the chart of series points (at, healthy_percentage, min) over [start, end)."""
    if not points:
        return Chart("", "No history yet for the last 24 hours.", 0)
    span = max(end - start, 1.0)

    def coords(at: float, pct: float) -> tuple[float, float]:
        return round((at - start) / span * CHART_W, 1), round((100.0 - pct) / 100.0 * CHART_H, 1)

    drawn = [coords(float(p["at"]), float(p["healthy_percentage"])) for p in points]
    path = "M" + " L".join(f"{x},{y}" for x, y in drawn)
    lowest = min(float(p["min"]) for p in points)
    summary = (f"Healthy share over the last 24 hours: {float(points[-1]['healthy_percentage']):g} % at the last point, "
               f"{lowest:g} % at the lowest, over {len(points)} five-minute point{'s' if len(points) != 1 else ''}.")
    return Chart(path, summary, len(points), drawn[-1])


def uptime_text(uptime: float | None) -> str:
    """Return a 24 h uptime as the page shows it."""
    return "no data" if uptime is None else f"{uptime:.2f} %"
