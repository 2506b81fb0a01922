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
from ..store import StoredReport
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
MEMO_ENTRIES = 1024
_DURATION = re.compile(r"^([1-9][0-9]{0,6})([mhd])$")
_CURSOR = re.compile(r"^[0-9]{1,15}-[0-9]{1,15}$")
# What history keeps when no prober has said otherwise yet (the defaults of the config file).
_KEPT = {"raw_s": 48 * 3600.0, "five_minute_s": 14 * 86400.0, "hourly_s": 400 * 86400.0}


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
    def read() -> dict[str, float]:
        raw = web.store._call(lambda: web.store.client.get(web.store.settings_key()))
        return {**_KEPT, **(json.loads(raw).get("history", {}) if raw else {})}

    return _memo().held(("kept",), int(time.monotonic() / SETTINGS_TTL_S), read)


def duration(name: str, raw: str, low: int, high: int) -> int:
    """Return a duration like 5m, 24h or 30d in seconds, or raise QueryError naming the allowed range."""
    allowed = f"a whole number of m, h or d from {_say(low)} to {_say(high)}, like 5m, 24h or 30d"
    match = _DURATION.match(raw)
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


def _iso(epoch: float) -> str:
    return report.iso(epoch)


def resolution(age_s: float, kept: dict[str, float]) -> int:
    """Return the finest resolution (s) history keeps for data age_s old."""
    if age_s <= kept["raw_s"]:
        return MINUTE
    return FIVE_MINUTES if age_s <= kept["five_minute_s"] else HOUR


class Memo:
    """A worker's memory of answers already computed, keyed by what they depend on; bounded, least recent out."""

    def __init__(self, size: int) -> None:
        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, key: Any) -> Any:
        """Return what is kept under key, or None."""
        with self.lock:
            value = self.items.get(key)
            if value is not None:
                self.items.move_to_end(key)
            return value

    def held(self, key: Any, marker: Any, make: Callable[[], Any]) -> Any:
        """Return what is kept under key while it was made for `marker`; else make it, keep it, and return it."""
        found = self.get(key)
        if found is not None and found[0] == marker:
            return found[1]
        value = make()
        self.put(key, (marker, value))
        return value

    def put(self, key: Any, value: Any) -> Any:
        """Keep a value (dropping the least recently used beyond the bound) and return it."""
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return value


def install(app_extensions: dict[str, Any]) -> None:
    """Give the app its memory of history answers.

    One entry per thing asked for, replaced when it changes: a page of points (up to 2,000), an
    integration's last checks and its rollups as arrays (some 50 KB), a tenant's report rows (one
    report's worth). MEMO_ENTRIES bounds a worker's memory for history to some 50 MB, and far less
    for the usual few tenants' worth.
    """
    app_extensions["status_history_memo"] = Memo(MEMO_ENTRIES)


def _memo() -> Memo:
    return current_app.extensions["status_history_memo"]


@bp.get("/status/history")
def history() -> Response:
    """Return the healthy percentage of the caller's tenant (or of one type) over a window, step by step."""
    web, found, store = _caller()
    args = request.args
    window = duration("window", args.get("window", "24h"), *WINDOW_RANGE)
    smallest = max(MINUTE, math.ceil(window / MAX_POINTS / MINUTE) * MINUTE)
    step = duration("step", args.get("step", _say(max(smallest, FIVE_MINUTES if window > 6 * HOUR else MINUTE))), *STEP_RANGE)
    if window / step > MAX_POINTS:
        raise QueryError("step", f"a {_say(window)} window at this step gives over {MAX_POINTS} points: use a step of at least {_say(smallest)}")
    kind = args.get("type")
    if kind is not None and not (0 < len(kind) <= MAX_TYPE_LENGTH and kind.isprintable()):
        raise QueryError("type", f"must be an integration type: 1-{MAX_TYPE_LENGTH} printable characters")
    now = time.time()
    start = math.floor((now - window) / step) * step
    finest = resolution(now - start, _kept(web))
    if step % finest:
        raise QueryError("step", f"data {_say(window)} old is kept in steps of {_say(finest)}: "
                                 f"the finest step allowed for this window is {_say(finest)} (or a multiple of it)")
    cursor = _cursor(store, found.tenant_id)
    # The answer changes only when the compactor moves the cursor, or the window moves on by a step.
    scope = rollup.OVERALL if kind is None else f"type:{kind}"

    def answer() -> bytes:
        points = store.points(found.tenant_id, scope, finest, start, now)
        return _encode({
            "window": _say(window), "step": _say(step), "type": kind,
            "complete_until": _iso(cursor) if cursor else None,  # data after this is not folded in yet
            "points": [{**p, "at": _iso(p["at"])} for p in rollup.series(points, start, now, step)],
        })

    return _bytes(_memo().held(("history", found.tenant_id, kind, step, window), (start, cursor), answer))


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
    # A state changes only with a check, which changes its stale time in the report this worker holds.
    state = memo.held(("state", tenant_id, integration_id), stale_at, lambda: store.state(tenant_id, integration_id))
    # The last checks change only with a new one, which is written with the state: its time says whether.
    last, shown = memo.held(("checks", tenant_id, integration_id), (state.checked_at, state.fence) if state else None,
                            lambda: _last_checks(store, tenant_id, integration_id))
    stale_after = (stale_at - state.checked_at) if state and stale_at is not None else 0.0
    # The rollups up to the cursor, read and summed once per worker each time the compactor moves it.
    fives, hours = memo.held(("rollups", tenant_id, integration_id), cursor, lambda: (
        rollup.Ledger(store.buckets(tenant_id, integration_id, FIVE_MINUTES, now - UPTIME_WINDOWS["24h"] - HOUR)),
        rollup.Ledger(store.buckets(tenant_id, integration_id, HOUR, now - UPTIME_WINDOWS["30d"] - DAY))))
    # After the cursor, up to now, from the raw checks: exact. The last checks hold them, unless the compactor lags.
    since = cursor if cursor is not None else now - UPTIME_WINDOWS["24h"]
    raw = list(reversed(last))
    if len(raw) == LAST_CHECKS and raw[0].at > since:  # they do not reach back to the status at the cursor
        raw = store.checks(tenant_id, [integration_id], since).get(integration_id, [])
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
        "checked_at": row["checked_at"], "latency_ms": row["latency_ms"],
        "since": _iso(state.since) if state and state.since else None,
        "consecutive_failures": state.consecutive_failures if state else 0,
        "last_checks": shown,
        "uptime": uptime, "coverage": coverage,
        "latency_ms_24h": {"p50": q[0.5], "p95": q[0.95], "p99": q[0.99]},
    }))


def _cursor(store: History, tenant_id: str) -> float | None:
    """Return up to when a tenant's history is folded, read at most once a second: it moves every few seconds at most."""
    return _memo().held(("cursor", tenant_id), int(time.monotonic()), lambda: store.cursor(tenant_id)[0])


def _last_checks(store: History, tenant_id: str, integration_id: str) -> tuple[list[rollup.Check], list[dict[str, Any]]]:
    last = store.last_checks(tenant_id, integration_id, LAST_CHECKS)
    return last, [_check(c) for c in last]


def _row(found: StoredReport, integration_id: str, now: float) -> tuple[dict[str, Any] | None, float | None]:
    """Return an integration's row of the report as of now, and when its result turns stale."""
    if found.until < now:  # aged by the clock: computed afresh, as /status does
        stale_at = {iid: float(at) for iid, at in json.loads(found.stale).items()}
        rows = {r["id"]: r for r in report.expire(json.loads(found.body), stale_at, now)["data"]["integrations"]}
        return rows.get(integration_id), stale_at.get(integration_id)
    rows, stale_at = _memo().held(("rows", found.tenant_id), (found.version, found.until), lambda: (
        {r["id"]: r for r in json.loads(found.body)["data"]["integrations"]},
        {iid: float(at) for iid, at in json.loads(found.stale).items()}))
    return rows.get(integration_id), stale_at.get(integration_id)


def _check(c: rollup.Check) -> dict[str, Any]:
    return {"at": _iso(c.at), "ok": c.ok, "status": c.status, "latency_ms": c.latency_ms, "reason": c.reason}


@bp.get("/status/events")
def events() -> Response:
    """Return the caller's transitions in time order, a page at a time; `next` is passed back as `since`."""
    web, found, store = _caller()
    raw_limit = request.args.get("limit", str(DEFAULT_LIMIT))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise QueryError("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
    limit = int(raw_limit)
    since = request.args.get("since")
    if since is None:
        page = store.events(found.tenant_id, None, limit)
    elif _CURSOR.match(since):
        page = store.events(found.tenant_id, f"({since}", limit)
    else:
        page = store.events(found.tenant_id, f"{round(_parse_time(since) * 1000)}-0", limit)
    out = [{"id": e.id, "at": _iso_ms(e.at), **e.body} for e in page]
    following = page[-1].id if page else (since if since and _CURSOR.match(since) else None)
    return _json({"events": out, "next": following})


def _parse_time(raw: str) -> float:
    try:
        at = datetime.fromisoformat(raw)
    except ValueError:
        at = None
    if at is None or at.tzinfo is None or not 2000 <= at.year <= 9999:
        raise QueryError("since", "must be a cursor from 'next', or a UTC ISO-8601 time like 2026-01-31T12:00:00Z")
    return at.astimezone(timezone.utc).timestamp()


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
