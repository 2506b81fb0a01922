"""Pure history arithmetic: checks to status segments, rollups, series points, uptime and quantiles.

Times are epoch seconds. An integration's status holds from one check until the next, or until its
stale_after has passed, after which it is unknown. Unknown time counts as neither healthy nor unhealthy
in uptime, and as not healthy in a tenant's healthy percentage, as /status counts it.
"""
from __future__ import annotations

import itertools
import math
from array import array
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping, Sequence

from .model import BACKOFF_REASONS, INVALID_CREDENTIALS_BACKOFF

HEALTHY, UNHEALTHY, MAINTENANCE = "healthy", "unhealthy", "maintenance"
LATENCY_BASE = 1.1  # histogram buckets grow by 10 %: a quantile is off by at most that much
QUANTILES = (0.5, 0.95, 0.99)
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
    backs_off: bool = False  # a provider check: a check whose credentials were refused stays fresh INVALID_CREDENTIALS_BACKOFF times longer


@dataclass(frozen=True)
class Bucket:
    """One integration's rollup of [start, start + covered_s): checks, failures, healthy and unhealthy seconds, latencies.

    A fine bucket keeps its latency histogram, so buckets merge exactly; a coarse one keeps only the
    quantiles (p50, p95, p99) its histogram gave, which is all it is read for and a tenth of the bytes.
    """

    start: float
    covered_s: float
    checks: int = 0
    failures: int = 0
    healthy_s: float = 0.0
    unhealthy_s: float = 0.0
    latency: Mapping[int, int] = field(default_factory=dict)  # histogram: bucket index -> count
    quantiles: tuple[int | None, ...] = ()  # p50, p95, p99 in ms, once the histogram is dropped

    def summarized(self) -> "Bucket":
        """Return this bucket with its histogram replaced by its quantiles."""
        q = quantiles(self.latency, QUANTILES)
        return replace(self, latency={}, quantiles=tuple(q[x] for x in QUANTILES))

    def encode(self, origin: float = 0.0) -> str:
        """Return the compact text kept in Redis, its start in seconds after `origin`."""
        hist = ",".join(f"{k}.{n}" for k, n in sorted(self.latency.items()))
        q = ",".join("" if v is None else str(v) for v in self.quantiles)
        return f"{_num(self.start - origin)}:{_num(self.covered_s)}:{self.checks}:{self.failures}:{_num(self.healthy_s)}:{_num(self.unhealthy_s)}:{hist}:{q}"

    @classmethod
    def decode(cls, text: str, origin: float = 0.0) -> "Bucket":
        """Read a bucket back from its compact text."""
        start, covered, checks, failures, healthy, unhealthy, hist, q = text.split(":")
        latency = {int(k): int(n) for k, _, n in (item.partition(".") for item in hist.split(",") if item)}
        summary = tuple(int(v) if v else None for v in q.split(",")) if q else ()
        return cls(origin + float(start), float(covered), int(checks), int(failures), float(healthy), float(unhealthy), latency, summary)


@dataclass(frozen=True)
class Point:
    """One scope's healthy percentage over [start, start + covered_s): its time integral, lowest and highest."""

    start: float
    covered_s: float
    integral: float  # percent × seconds
    low: float
    high: float

    def encode(self, origin: float = 0.0) -> str:
        """Return the compact text kept in Redis, its start in seconds after `origin`."""
        return f"{_num(self.start - origin)}:{_num(self.covered_s)}:{_num(self.integral)}:{_num(self.low)}:{_num(self.high)}"

    @classmethod
    def decode(cls, text: str, origin: float = 0.0) -> "Point":
        """Read a point back from its compact text."""
        start, covered, integral, low, high = text.split(":")
        return cls(origin + float(start), float(covered), float(integral), float(low), float(high))


def _num(x: float) -> str:
    """Return a number to the thousandth, without trailing zeros: 60, 66.667, 1800000000."""
    return f"{x:.3f}".rstrip("0").rstrip(".")


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


def segments(track: Track, start: float, end: float, kinds: tuple[str, ...] = (HEALTHY, UNHEALTHY)) -> list[tuple[float, float, str]]:
    """Return the stretches of one integration within [start, end) whose status is one of `kinds` (the known ones), in order."""
    out: list[tuple[float, float, str]] = []
    checks = track.checks
    for n, check in enumerate(checks):
        stretch = INVALID_CREDENTIALS_BACKOFF if track.backs_off and check.reason in BACKOFF_REASONS else 1
        until = check.at + track.stale_after_s * stretch
        if n + 1 < len(checks):
            until = min(until, checks[n + 1].at)
        a, b = max(check.at, start), min(until, end)
        if a < b and check.status in kinds:
            out.append((a, b, check.status))
    return out


def integration_buckets(track: Track, start: float, end: float, size_s: float) -> list[Bucket]:
    """Roll one integration up into buckets of size_s from `start` (aligned) to `end`; the last may be partial."""
    buckets = []
    stretches = segments(track, start, end)
    times = [c.at for c in track.checks]
    first = 0
    for at in _steps(start, end, size_s):
        stop = min(_floor(at, size_s) + size_s, end)
        inside = track.checks[bisect_left(times, at):bisect_left(times, stop)]
        latency: dict[int, int] = {}
        for c in inside:
            if c.latency_ms is not None:
                k = latency_index(c.latency_ms)
                latency[k] = latency.get(k, 0) + 1
        while first < len(stretches) and stretches[first][1] <= at:
            first += 1  # stretches are in order and do not overlap: those before this bucket are done
        healthy = unhealthy = 0.0
        for a, b, status in itertools.takewhile(lambda x: x[0] < stop, itertools.islice(stretches, first, None)):
            if status == HEALTHY:
                healthy += _overlap(a, b, at, stop)
            else:
                unhealthy += _overlap(a, b, at, stop)
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
        # (healthy, counted) changes: healthy +1 when an integration turns healthy, -1 when it stops;
        # counted -1 while it is in maintenance, which leaves it out of the percentage.
        changes: dict[float, tuple[int, int]] = {}
        for track in members:
            for a, b, status in segments(track, start, end, (HEALTHY, MAINTENANCE)):
                step = (1, 0) if status == HEALTHY else (0, -1)
                changes[a] = _add(changes.get(a, (0, 0)), step)
                changes[b] = _add(changes.get(b, (0, 0)), (-step[0], -step[1]))
        out[scope] = _sweep(sorted(changes.items()), len(members), start, end, size_s)
    return out


def _add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return a[0] + b[0], a[1] + b[1]


def _sweep(changes: list[tuple[float, tuple[int, int]]], members: int, start: float, end: float, size_s: float) -> list[Point]:
    points, healthy, counted, n = [], 0, members, 0

    def percent() -> float:
        return 100.0 * healthy / counted if counted else 100.0  # all in maintenance: nothing counts against it, as in /status

    for at in _steps(start, end, size_s):
        stop = min(_floor(at, size_s) + size_s, end)
        while n < len(changes) and changes[n][0] <= at:
            healthy, counted = healthy + changes[n][1][0], counted + changes[n][1][1]
            n += 1
        pct = percent()
        integral, low, high, cursor = 0.0, pct, pct, at
        while n < len(changes) and changes[n][0] < stop:
            integral += pct * (changes[n][0] - cursor)
            cursor = changes[n][0]
            healthy, counted = healthy + changes[n][1][0], counted + changes[n][1][1]
            n += 1
            pct = percent()
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
            out[at] = Bucket(at, b.start + b.covered_s - at, b.checks, b.failures, b.healthy_s, b.unhealthy_s, dict(b.latency), b.quantiles)
            continue
        latency = dict(was.latency)
        for k, count in b.latency.items():
            latency[k] = latency.get(k, 0) + count
        out[at] = Bucket(at, max(was.covered_s, b.start + b.covered_s - at), was.checks + b.checks, was.failures + b.failures,
                         was.healthy_s + b.healthy_s, was.unhealthy_s + b.unhealthy_s, latency, was.quantiles)
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


class Ledger:
    """Buckets in order with running sums: healthy and unhealthy time over any window in O(log n).

    Compact, as web workers keep many: arrays of numbers, and the buckets' latency histograms only.
    """

    def __init__(self, buckets: Iterable[Bucket]) -> None:
        kept = sorted((b for b in buckets if b.covered_s > 0), key=lambda b: b.start)
        self.starts = array("d", (b.start for b in kept))
        self.ends = array("d", (b.start + b.covered_s for b in kept))
        self.healthy_s = array("d", (b.healthy_s for b in kept))
        self.unhealthy_s = array("d", (b.unhealthy_s for b in kept))
        self.healthy, self.unhealthy = array("d", [0.0]), array("d", [0.0])
        for b in kept:
            self.healthy.append(self.healthy[-1] + b.healthy_s)
            self.unhealthy.append(self.unhealthy[-1] + b.unhealthy_s)
        # The histograms, flat: bucket k's (index, count) pairs run from pairs[2 * at[k]] to pairs[2 * at[k + 1]].
        self.pairs, self.at = array("l"), array("l", [0])
        for b in kept:
            for index, count in b.latency.items():
                self.pairs.extend((index, count))
            self.at.append(len(self.pairs) // 2)
        self._latency: tuple[int, dict[int, int]] = (-1, {})

    @property
    def nbytes(self) -> int:
        """Return about how many bytes this ledger holds."""
        return sum(a.itemsize * len(a) for a in (self.starts, self.ends, self.healthy_s, self.unhealthy_s, self.healthy,
                                                 self.unhealthy, self.pairs, self.at)) + 600

    def sums(self, start: float, end: float) -> tuple[float, float]:
        """Return (healthy, unhealthy) seconds within [start, end); a bucket the window cuts counts in proportion."""
        i, j = bisect_right(self.ends, start), bisect_left(self.starts, end)
        if i >= j:
            return 0.0, 0.0
        healthy, unhealthy = self.healthy[j] - self.healthy[i], self.unhealthy[j] - self.unhealthy[i]
        for k in {i, j - 1}:  # the edges: take back the share outside the window
            covered = self.ends[k] - self.starts[k]
            outside = 1.0 - _overlap(self.starts[k], self.ends[k], start, end) / covered
            healthy -= self.healthy_s[k] * outside
            unhealthy -= self.unhealthy_s[k] * outside
        return max(0.0, healthy), max(0.0, unhealthy)

    def latency(self, since: float) -> dict[int, int]:
        """Return the latency histogram of the buckets that start at or after `since` (kept for the last `since`)."""
        k = bisect_left(self.starts, since)
        if self._latency[0] != k:  # the window start moves only with the clock: merged again every 5 minutes
            merged: dict[int, int] = {}
            for n in range(2 * self.at[k], len(self.pairs), 2):
                merged[self.pairs[n]] = merged.get(self.pairs[n], 0) + self.pairs[n + 1]
            self._latency = (k, merged)
        return self._latency[1]


def ratio(healthy_s: float, unhealthy_s: float, span_s: float) -> tuple[float | None, float]:
    """Return (uptime %, coverage %): healthy over known time (None without any), and known time over the span."""
    known = healthy_s + unhealthy_s
    coverage = min(100.0, 100.0 * known / span_s) if span_s > 0 else 0.0
    return (round(100.0 * healthy_s / known, 3) if known else None), round(coverage, 3)


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
