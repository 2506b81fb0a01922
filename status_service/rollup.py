"""Pure history arithmetic: checks to status segments, rollups, series points, uptime and quantiles.

Times are epoch seconds. An integration's status holds from one check until the next, or until its
stale_after has passed, after which it is unknown. Unknown time counts as neither healthy nor unhealthy
in uptime, and as not healthy in a tenant's healthy percentage, as /status counts it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

HEALTHY, UNHEALTHY = "healthy", "unhealthy"
LATENCY_BASE = 1.1  # histogram buckets grow by 10 %: a quantile is off by at most that much
OVERALL = ""  # the scope of a tenant's whole series; a type's scope is its name prefixed "type:"


@dataclass(frozen=True)
class Check:
    """One recorded probe: when, whether it passed, the status after thresholds, latency and reason."""

    at: float
    ok: bool
    status: str
    latency_ms: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Track:
    """One integration's checks (ascending), with what history needs of its definition."""

    id: str
    type: str
    stale_after_s: float
    checks: tuple[Check, ...] = ()


@dataclass(frozen=True)
class Bucket:
    """One integration's rollup of [start, start + covered_s): checks, failures, healthy and unhealthy seconds, latencies."""

    start: float
    covered_s: float
    checks: int = 0
    failures: int = 0
    healthy_s: float = 0.0
    unhealthy_s: float = 0.0
    latency: Mapping[int, int] = field(default_factory=dict)  # histogram: bucket index -> count

    def encode(self) -> str:
        """Return the compact text kept in Redis."""
        hist = ",".join(f"{k}.{n}" for k, n in sorted(self.latency.items()))
        return f"{_ms(self.start)}:{_ms(self.covered_s)}:{self.checks}:{self.failures}:{_ms(self.healthy_s)}:{_ms(self.unhealthy_s)}:{hist}"

    @classmethod
    def decode(cls, text: str) -> "Bucket":
        """Read a bucket back from its compact text."""
        start, covered, checks, failures, healthy, unhealthy, hist = text.split(":")
        latency = {int(k): int(n) for k, _, n in (item.partition(".") for item in hist.split(",") if item)}
        return cls(int(start) / 1000, int(covered) / 1000, int(checks), int(failures), int(healthy) / 1000, int(unhealthy) / 1000, latency)


@dataclass(frozen=True)
class Point:
    """One scope's healthy percentage over [start, start + covered_s): its time integral, lowest and highest."""

    start: float
    covered_s: float
    integral: float  # percent × seconds
    low: float
    high: float

    def encode(self) -> str:
        """Return the compact text kept in Redis."""
        return f"{_ms(self.start)}:{_ms(self.covered_s)}:{self.integral:.3f}:{self.low:g}:{self.high:g}"

    @classmethod
    def decode(cls, text: str) -> "Point":
        """Read a point back from its compact text."""
        start, covered, integral, low, high = text.split(":")
        return cls(int(start) / 1000, int(covered) / 1000, float(integral), float(low), float(high))


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def latency_index(ms: int) -> int:
    """Return the histogram bucket of a latency: bucket k holds (1.1^(k-1), 1.1^k] ms, bucket 0 holds 0 and 1 ms."""
    return 0 if ms <= 1 else math.ceil(math.log(ms) / math.log(LATENCY_BASE) - 1e-9)


def latency_bound(index: int) -> int:
    """Return the upper bound in ms of a histogram bucket, as a quantile reports it."""
    return max(1, math.floor(LATENCY_BASE ** index + 1e-9))


def quantiles(histogram: Mapping[int, int], qs: Sequence[float]) -> dict[float, int | None]:
    """Return each quantile's latency (the upper bound of the bucket holding that rank); None without data."""
    total = sum(histogram.values())
    if not total:
        return {q: None for q in qs}
    ordered = sorted(histogram.items())
    out: dict[float, int | None] = {}
    for q in qs:
        rank, seen = max(1, math.ceil(q * total)), 0
        for index, count in ordered:
            seen += count
            if seen >= rank:
                out[q] = latency_bound(index)
                break
    return out


def segments(track: Track, start: float, end: float) -> list[tuple[float, float, str]]:
    """Return the known-status stretches of one integration within [start, end), in order."""
    out: list[tuple[float, float, str]] = []
    checks = track.checks
    for n, check in enumerate(checks):
        until = check.at + track.stale_after_s
        if n + 1 < len(checks):
            until = min(until, checks[n + 1].at)
        a, b = max(check.at, start), min(until, end)
        if a < b and check.status in (HEALTHY, UNHEALTHY):
            out.append((a, b, check.status))
    return out


def integration_buckets(track: Track, start: float, end: float, size_s: float) -> list[Bucket]:
    """Roll one integration up into buckets of size_s from `start` (aligned) to `end`; the last may be partial."""
    buckets = []
    stretches = segments(track, start, end)
    for at in _steps(start, end, size_s):
        stop = min(_floor(at, size_s) + size_s, end)
        inside = [c for c in track.checks if at <= c.at < stop]
        latency: dict[int, int] = {}
        for c in inside:
            if c.latency_ms is not None:
                k = latency_index(c.latency_ms)
                latency[k] = latency.get(k, 0) + 1
        healthy = sum(_overlap(a, b, at, stop) for a, b, s in stretches if s == HEALTHY)
        unhealthy = sum(_overlap(a, b, at, stop) for a, b, s in stretches if s == UNHEALTHY)
        buckets.append(Bucket(at, stop - at, len(inside), sum(not c.ok for c in inside), healthy, unhealthy, latency))
    return buckets


def scope_points(tracks: Sequence[Track], start: float, end: float, size_s: float = 60.0) -> dict[str, list[Point]]:
    """Return each scope's exact healthy-percentage points from `start` (aligned) to `end`.

    Scopes: OVERALL and "type:<type>". The percentage at an instant is healthy integrations over all
    integrations of the scope; each point holds its time integral and its extremes.
    """
    scopes: dict[str, list[Track]] = {OVERALL: list(tracks)}
    for track in tracks:
        scopes.setdefault(f"type:{track.type}", []).append(track)
    out = {}
    for scope, members in scopes.items():
        # +1 when an integration turns healthy, -1 when it stops being healthy.
        changes: dict[float, int] = {}
        for track in members:
            for a, b, status in segments(track, start, end):
                if status == HEALTHY:
                    changes[a] = changes.get(a, 0) + 1
                    changes[b] = changes.get(b, 0) - 1
        out[scope] = _sweep(sorted(changes.items()), len(members), start, end, size_s)
    return out


def _sweep(changes: list[tuple[float, int]], total: int, start: float, end: float, size_s: float) -> list[Point]:
    points, healthy, n = [], 0, 0
    for at in _steps(start, end, size_s):
        stop = min(_floor(at, size_s) + size_s, end)
        while n < len(changes) and changes[n][0] <= at:
            healthy += changes[n][1]
            n += 1
        pct = 100.0 * healthy / total
        integral, low, high, cursor = 0.0, pct, pct, at
        while n < len(changes) and changes[n][0] < stop:
            integral += pct * (changes[n][0] - cursor)
            cursor = changes[n][0]
            healthy += changes[n][1]
            n += 1
            pct = 100.0 * healthy / total
            low, high = min(low, pct), max(high, pct)
        integral += pct * (stop - cursor)
        points.append(Point(at, stop - at, integral, low, high))
    return points


def merge_buckets(buckets: Iterable[Bucket], size_s: float) -> list[Bucket]:
    """Fold buckets into coarser aligned ones of size_s."""
    out: dict[float, Bucket] = {}
    for b in buckets:
        at = _floor(b.start, size_s)
        was = out.get(at)
        if was is None:
            out[at] = Bucket(at, b.start + b.covered_s - at, b.checks, b.failures, b.healthy_s, b.unhealthy_s, dict(b.latency))
            continue
        latency = dict(was.latency)
        for k, count in b.latency.items():
            latency[k] = latency.get(k, 0) + count
        out[at] = Bucket(at, max(was.covered_s, b.start + b.covered_s - at), was.checks + b.checks, was.failures + b.failures,
                         was.healthy_s + b.healthy_s, was.unhealthy_s + b.unhealthy_s, latency)
    return [out[at] for at in sorted(out)]


def merge_points(points: Iterable[Point], size_s: float) -> list[Point]:
    """Fold points into coarser aligned ones of size_s."""
    out: dict[float, Point] = {}
    for p in points:
        at = _floor(p.start, size_s)
        was = out.get(at)
        out[at] = Point(at, p.covered_s, p.integral, p.low, p.high) if was is None else Point(
            at, was.covered_s + p.covered_s, was.integral + p.integral, min(was.low, p.low), max(was.high, p.high))
    return [out[at] for at in sorted(out)]


def uptime(buckets: Iterable[Bucket], start: float, end: float) -> tuple[float | None, float]:
    """Return (uptime %, coverage %) over [start, end) from buckets; a bucket cut by the window counts in proportion.

    Uptime is healthy time over healthy plus unhealthy time (None when there is neither); coverage is
    the share of the window with either.
    """
    healthy = unhealthy = 0.0
    for b in buckets:
        if b.covered_s <= 0:
            continue
        share = _overlap(b.start, b.start + b.covered_s, start, end) / b.covered_s
        healthy += b.healthy_s * share
        unhealthy += b.unhealthy_s * share
    known = healthy + unhealthy
    coverage = min(100.0, 100.0 * known / (end - start)) if end > start else 0.0
    return (round(100.0 * healthy / known, 3) if known else None), round(coverage, 3)


def series(points: Sequence[Point], start: float, end: float, step_s: float) -> list[dict[str, float | str]]:
    """Return the points of [start, end) at step_s (aligned): average, lowest and highest percentage, worst status.

    A step with no data is left out rather than guessed.
    """
    merged = merge_points((p for p in points if start <= p.start < end), step_s)
    out = []
    for p in merged:
        if p.covered_s <= 0:
            continue
        out.append({"at": p.start, "healthy_percentage": round(p.integral / p.covered_s, 2),
                    "min": round(p.low, 2), "max": round(p.high, 2), "status": worst_status(p.low)})
    return out


def worst_status(low: float) -> str:
    """Return the status a scope had at its lowest healthy percentage."""
    if low >= 100.0:
        return "ok"
    return "unhealthy" if low <= 0.0 else "degraded"


def _steps(start: float, end: float, size_s: float) -> Iterable[float]:
    at = start
    while at < end:
        yield at
        at = _floor(at, size_s) + size_s


def _floor(at: float, size_s: float) -> float:
    return math.floor(at / size_s) * size_s


def _overlap(a: float, b: float, c: float, d: float) -> float:
    return max(0.0, min(b, d) - max(a, c))
