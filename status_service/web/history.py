"""History for the caller's tenant: GET /status/history, /status/integrations/<id> and /status/events."""
from __future__ import annotations

import json
import math
import re
import threading
import time
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Any, Callable

from flask import Blueprint, Response, current_app, request

from .. import report, rollup
from ..model import HistoryOptions
from ..store import StoredReport
from ..store.catalog import Catalog
from ..store.history import DAY, FIVE_MINUTES, HOUR, MINUTE, History
from .auth import candidate_keys, digest
from .errors import error_response
from .status import Web

bp = Blueprint("history", __name__)

UNITS = {"m": MINUTE, "h": HOUR, "d": 86400}
WINDOW_RANGE, STEP_RANGE = (HOUR, 400 * 86400), (MINUTE, 86400)
MAX_POINTS = 2000
UPTIME_WINDOWS = {"1h": HOUR, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
LAST_CHECKS = 20
DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
MAX_TYPE_LENGTH = 200
SETTINGS_TTL_S = 5.0
MEMO_BYTES = 32 * 2**20  # a worker's memory of history answers: pages of points, rollups, last checks
_DURATION = re.compile(r"([1-9][0-9]{0,6})([mhd])")
_CURSOR = re.compile(r"[0-9]{1,15}-[0-9]{1,20}")
LAST_SEQUENCE = 2**64 - 1  # the largest sequence number of a stream id
# What history keeps when no prober has said otherwise yet (the defaults of the config file).
_KEPT = {"raw_s": HistoryOptions().raw_s, "five_minute_s": HistoryOptions().five_minute_s, "hourly_s": HistoryOptions().hourly_s}


class QueryError(Exception):
    """A query parameter the endpoint refuses, named with what is allowed."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name, self.message = name, message


@bp.errorhandler(QueryError)
def refused(exc: QueryError) -> Response:
    """Answer 400 in the error envelope, naming the parameter."""
    return error_response(400, "invalid_request", f"{exc.name}: {exc.message}", fields={f"query.{exc.name}": [exc.message]})


def _caller() -> tuple[Web, StoredReport, History]:
    web: Web = current_app.extensions["status_web"]
    found = web.find([digest(key) for key in candidate_keys(request.headers.get("Authorization"))])
    return web, found, History(web.store)


def _kept(web: Web) -> dict[str, float]:
    """Return what history keeps, as the last seed said it; read again every few seconds."""
    return _memo().held(("kept",), int(time.monotonic() / SETTINGS_TTL_S),
                        lambda: {**_KEPT, **Catalog(web.store).settings().get("history", {})})


def duration(name: str, raw: str, low: int, high: int) -> int:
    """Return a duration like 5m, 24h or 30d in seconds, or raise QueryError naming the allowed range."""
    allowed = f"a whole number of m, h or d from {_say(low)} to {_say(high)}, like 5m, 24h or 30d"
    match = _DURATION.fullmatch(raw)
    if not match:
        raise QueryError(name, f"must be {allowed}")
    seconds = int(match.group(1)) * UNITS[match.group(2)]
    if not low <= seconds <= high:
        raise QueryError(name, f"must be {allowed}")
    return seconds


def _say(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", HOUR), ("m", MINUTE)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _multiple(seconds: float, unit: int) -> int:
    """Return the smallest multiple of unit that is at least seconds, at most a day."""
    return min(STEP_RANGE[1], math.ceil(seconds / unit) * unit)


def resolution(age_s: float, kept: dict[str, float]) -> int:
    """Return the finest resolution (s) history keeps for data age_s old."""
    if age_s <= kept["raw_s"]:
        return MINUTE
    return FIVE_MINUTES if age_s <= kept["five_minute_s"] else HOUR


class Memo:
    """A worker's memory of answers already computed, keyed by what they depend on; bounded in bytes, least recent out."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.bytes, self.items, self.lock = max_bytes, 0, OrderedDict(), threading.Lock()

    def held(self, key: Any, marker: Any, make: Callable[[], Any], size: Callable[[Any], int] = lambda v: 1024) -> Any:
        """Return what is kept under key while it was made for `marker`; else make it, keep it (of `size` bytes), and return it."""
        with self.lock:
            found = self.items.get(key)
            if found is not None and found[0] == marker:
                self.items.move_to_end(key)
                return found[1]
        value = make()
        nbytes = size(value) + 200  # the entry itself
        with self.lock:
            was = self.items.pop(key, None)
            self.bytes -= was[2] if was else 0
            if nbytes <= self.max_bytes:
                self.items[key] = (marker, value, nbytes)
                self.bytes += nbytes
            while self.bytes > self.max_bytes:
                self.bytes -= self.items.popitem(last=False)[1][2]
        return value


def install(app_extensions: dict[str, Any]) -> None:
    """Give the app its memory of history answers: one entry per thing asked for, replaced when it changes."""
    app_extensions["status_history_memo"] = Memo(MEMO_BYTES)


def _memo() -> Memo:
    return current_app.extensions["status_history_memo"]


@bp.get("/status/history")
def history() -> Response:
    """Return the healthy percentage of the caller's tenant (or of one type) over a window, step by step."""
    web, found, store = _caller()
    args = request.args
    window = duration("window", args.get("window", "24h"), *WINDOW_RANGE)
    kept = _kept(web)
    coarse = resolution(window, kept)  # what is kept for the window's oldest instant: steps are multiples of it
    smallest = _multiple(max(MINUTE, window / MAX_POINTS), coarse)
    raw_step = args.get("step")
    step = _multiple(max(smallest, FIVE_MINUTES if window > 6 * HOUR else MINUTE), coarse) if raw_step is None \
        else duration("step", raw_step, *STEP_RANGE)
    if window / step > MAX_POINTS:
        raise QueryError("step", f"a {_say(window)} window at this step gives over {MAX_POINTS} points: use a step of at least {_say(smallest)}")
    if step % coarse:
        raise QueryError("step", f"data {_say(window)} old is kept in steps of {_say(coarse)}: "
                                 f"the finest step allowed for this window is {_say(coarse)} (or a multiple of it)")
    kind = args.get("type")
    if kind is not None and not (0 < len(kind) <= MAX_TYPE_LENGTH and kind.isprintable()):
        raise QueryError("type", f"must be an integration type: 1-{MAX_TYPE_LENGTH} printable characters")
    now = time.time()
    start = math.ceil((now - window) / step) * step  # within the window: at most window / step points
    finest = resolution(now - start, kept)
    cursor = _cursor(store, found.tenant_id)
    # The answer changes only when the compactor moves the cursor, or the window moves on by a step.
    scope = rollup.OVERALL if kind is None else f"type:{kind}"

    def answer() -> bytes:
        points = store.points(found.tenant_id, scope, finest, start, now)
        return _encode({
            "window": _say(window), "step": _say(step), "type": kind,
            "complete_until": report.iso(cursor) if cursor else None,  # data after this is not folded in yet
            "points": [{**p, "at": report.iso(p["at"])} for p in rollup.series(points, start, now, step)],
        })

    return _bytes(_memo().held(("history", found.tenant_id, kind, step, window), (start, cursor), answer, len))


@bp.get("/status/integrations/<integration_id>")
def integration(integration_id: str) -> Response:
    """Return one integration's state, last checks, uptime with coverage, and latency percentiles."""
    web, found, store = _caller()
    now = time.time()
    row, stale_at = _row(found, integration_id, now)
    if row is None:  # another tenant's id too: ids do not leak
        return error_response(404, "not_found", "no integration with this id")
    tenant_id = found.tenant_id
    cursor = _cursor(store, tenant_id)
    memo = _memo()
    body_mark = hash(found.body)  # this report, of this tenant: a tenant made again under the id has another
    # A state changes only with a check, which changes its stale time in the report this worker holds.
    state = memo.held(("state", tenant_id, integration_id), (stale_at, body_mark), lambda: store.state(tenant_id, integration_id))
    # The last checks change only with a new one, which is written with the state: its time says whether.
    last, shown = memo.held(("checks", tenant_id, integration_id), (state.checked_at, state.fence) if state else None,
                            lambda: _last_checks(store, tenant_id, integration_id), lambda v: 300 * len(v[0]))
    # stale_after, from this report's own row: its checked_at is to the second.
    checked = _epoch(row["checked_at"]) if row.get("checked_at") else None
    stale_after = max(0.0, stale_at - checked) if stale_at is not None and checked is not None else 0.0
    # The rollups, and the cursor they are complete up to, read together once each time the compactor moves it.
    since, fives, hours = memo.held(("rollups", tenant_id, integration_id), cursor, lambda: _rollups(store, tenant_id, integration_id, now),
                                    lambda v: v[1].nbytes + v[2].nbytes)
    since = since if since is not None else now - UPTIME_WINDOWS["24h"]
    # After the cursor, up to now, from the raw checks: exact. The last checks hold them, unless the compactor lags.
    raw = list(reversed(last))
    if len(raw) == LAST_CHECKS and raw[0].at > since:  # they do not reach back to the status at the cursor
        raw = memo.held(("raw", tenant_id, integration_id), (since, state.checked_at if state else None),
                        lambda: store.checks(tenant_id, [integration_id], since).get(integration_id, []), lambda v: 300 * len(v))
    track = rollup.Track(integration_id, row["type"], stale_after, tuple(raw))
    tail = rollup.Ledger(rollup.integration_buckets(track, since, now, max(now - since, 1.0)))
    uptime, coverage = {}, {}
    for name, span in UPTIME_WINDOWS.items():
        kept = (fives if span <= UPTIME_WINDOWS["24h"] else hours).sums(now - span, since)
        recent = tail.sums(now - span, now)
        uptime[name], coverage[name] = rollup.ratio(kept[0] + recent[0], kept[1] + recent[1], span)
    latency = dict(fives.latency(now - UPTIME_WINDOWS["24h"]))
    for k, n in tail.latency(since).items():
        latency[k] = latency.get(k, 0) + n
    q = rollup.quantiles(latency, rollup.QUANTILES)
    return _bytes(_encode({
        "id": integration_id, "type": row["type"], "status": row["status"], "reason": row["reason"],
        "checked_at": row["checked_at"],
        "since": report.iso(state.since) if state and state.since else None,
        "consecutive_failures": state.consecutive_failures if state else 0,
        "last_checks": shown,
        "uptime": uptime, "coverage": coverage,
        "latency_ms": {"p50": q[0.5], "p95": q[0.95], "p99": q[0.99]},  # over 24 h; the last check's is in last_checks
    }))


def _rollups(store: History, tenant_id: str, integration_id: str, now: float) -> tuple[float | None, rollup.Ledger, rollup.Ledger]:
    cursor, fives, hours = store.rollups(tenant_id, integration_id, now - UPTIME_WINDOWS["24h"] - HOUR, now - UPTIME_WINDOWS["30d"] - DAY)
    return cursor, rollup.Ledger(fives), rollup.Ledger(hours)


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _cursor(store: History, tenant_id: str) -> float | None:
    """Return up to when a tenant's history is folded, read at most once a second: it moves every few seconds at most."""
    return _memo().held(("cursor", tenant_id), int(time.monotonic()), lambda: store.cursor(tenant_id))


def _last_checks(store: History, tenant_id: str, integration_id: str) -> tuple[list[rollup.Check], list[dict[str, Any]]]:
    last = store.last_checks(tenant_id, integration_id, LAST_CHECKS)
    return last, [_check(c) for c in last]


def _row(found: StoredReport, integration_id: str, now: float) -> tuple[dict[str, Any] | None, float | None]:
    """Return an integration's row of the report as of now, and when its result turns stale."""
    if found.until < now:  # aged by the clock: computed afresh, as /status does
        stale_at = {iid: float(at) for iid, at in json.loads(found.stale).items()}
        rows = {r["id"]: r for r in report.expire(json.loads(found.body), stale_at, now)["data"]["integrations"]}
        return rows.get(integration_id), stale_at.get(integration_id)
    rows, stale_at = _memo().held(("rows", found.tenant_id), (found.version, found.until, hash(found.body)), lambda: (
        {r["id"]: r for r in json.loads(found.body)["data"]["integrations"]},
        {iid: float(at) for iid, at in json.loads(found.stale).items()}), lambda v: 3 * len(found.body) + len(found.stale))
    return rows.get(integration_id), stale_at.get(integration_id)


def _check(c: rollup.Check) -> dict[str, Any]:
    return {"at": report.iso(c.at), "ok": c.ok, "status": c.status, "latency_ms": c.latency_ms, "reason": c.reason}


@bp.get("/status/events")
def events() -> Response:
    """Return the caller's transitions in time order, a page at a time; `next` is passed back as `since`."""
    web, found, store = _caller()
    raw_limit = request.args.get("limit", str(DEFAULT_LIMIT))
    if not re.fullmatch(r"[0-9]{1,4}", raw_limit) or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise QueryError("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
    limit = int(raw_limit)
    since = request.args.get("since")
    if since is not None and not (_CURSOR.fullmatch(since) and int(since.partition("-")[2]) <= LAST_SEQUENCE):
        since = f"{math.ceil(_parse_time(since) * 1000) - 1}-{LAST_SEQUENCE}"  # the cursor just before that time
    page = store.events(found.tenant_id, None if since is None else f"({since}", limit)
    out = [{"id": e.id, "at": _iso_ms(e.at), **e.body} for e in page]
    return _json({"events": out, "next": page[-1].id if page else since})


def _parse_time(raw: str) -> float:
    try:
        at = datetime.fromisoformat(raw)
        if at.tzinfo is not None and 2000 <= at.year <= 9000:
            return at.astimezone(timezone.utc).timestamp()
    except (ValueError, OverflowError):
        pass
    raise QueryError("since", "must be a cursor from 'next', or a UTC ISO-8601 time like 2026-01-31T12:00:00Z")


def _iso_ms(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json(body: dict[str, Any]) -> Response:
    return _bytes(_encode(body))


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _bytes(body: bytes) -> Response:
    response = Response(body, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response
