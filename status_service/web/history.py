"""History for the caller's tenant: GET /status/history, /status/integrations/<id> and /status/events."""
from __future__ import annotations

import json
import math
import re
import time
from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from .. import report, rollup
from ..store import StoredReport
from ..store.history import FIVE_MINUTES, HOUR, MINUTE, History
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
_DURATION = re.compile(r"^([1-9][0-9]{0,6})([mhd])$")
_CURSOR = re.compile(r"^[0-9]{1,15}-[0-9]{1,15}$")
# What history keeps when no prober has said otherwise yet (the defaults of the config file).
_KEPT = {"raw_s": 48 * 3600.0, "five_minute_s": 14 * 86400.0, "hourly_s": 400 * 86400.0}
_settings: dict[str, Any] = {"at": -math.inf, "kept": _KEPT}


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
    now = time.monotonic()
    if now - _settings["at"] > SETTINGS_TTL_S:
        raw = web.store._call(lambda: web.store.client.get(web.store.settings_key()))
        _settings["kept"] = {**_KEPT, **(json.loads(raw).get("history", {}) if raw else {})}
        _settings["at"] = now
    return _settings["kept"]


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
    scope = rollup.OVERALL if kind is None else f"type:{kind}"
    points = store.points(found.tenant_id, scope, finest, start, now)
    cursor, _, _ = store.cursor(found.tenant_id)
    body = {
        "window": _say(window), "step": _say(step), "type": kind,
        "complete_until": _iso(cursor) if cursor else None,  # data after this is not folded in yet
        "points": [{**p, "at": _iso(p["at"])} for p in rollup.series(points, start, now, step)],
    }
    return _json(body)


@bp.get("/status/integrations/<integration_id>")
def integration(integration_id: str) -> Response:
    """Return one integration's state, last checks, uptime with coverage, and latency percentiles."""
    web, found, store = _caller()
    now = time.time()
    document = json.loads(found.body)
    stale_at = {iid: float(at) for iid, at in json.loads(found.stale).items()}
    if found.until < now:
        document = report.expire(document, stale_at, now)
    row = next((r for r in document["data"]["integrations"] if r["id"] == integration_id), None)
    if row is None:  # another tenant's id too: ids do not leak
        return error_response(404, "not_found", "no integration with this id")
    tenant_id = found.tenant_id
    state = store.state(tenant_id, integration_id)
    cursor, _, _ = store.cursor(tenant_id)
    stale_after = (stale_at[integration_id] - state.checked_at) if state and integration_id in stale_at else 0.0
    fives = store.buckets(tenant_id, integration_id, FIVE_MINUTES, now - UPTIME_WINDOWS["24h"] - FIVE_MINUTES)
    hours = store.buckets(tenant_id, integration_id, HOUR, now - UPTIME_WINDOWS["30d"] - HOUR)
    # What the rollups do not hold yet, up to now, from the raw checks: exact.
    since = cursor if cursor is not None else now - UPTIME_WINDOWS["24h"]
    raw = store.checks(tenant_id, [integration_id], since - stale_after).get(integration_id, [])
    track = rollup.Track(integration_id, row["type"], stale_after, tuple(raw))
    tail = rollup.integration_buckets(track, since, now, max(now - since, 1.0))
    uptime, coverage = {}, {}
    for name, span in UPTIME_WINDOWS.items():
        pieces = (fives if span <= UPTIME_WINDOWS["24h"] else hours) + tail
        uptime[name], coverage[name] = rollup.uptime(pieces, now - span, now)
    latency: dict[int, int] = {}
    for b in [b for b in fives if b.start >= now - UPTIME_WINDOWS["24h"]] + tail:
        for k, n in b.latency.items():
            latency[k] = latency.get(k, 0) + n
    quantiles = rollup.quantiles(latency, (0.5, 0.95, 0.99))
    body = {
        "id": integration_id, "type": row["type"], "status": row["status"], "reason": row["reason"],
        "checked_at": row["checked_at"], "latency_ms": row["latency_ms"],
        "since": _iso(state.since) if state and state.since else None,
        "consecutive_failures": state.consecutive_failures if state else 0,
        "last_checks": [_check(c) for c in store.last_checks(tenant_id, integration_id, LAST_CHECKS)],
        "uptime": uptime, "coverage": coverage,
        "latency_ms_24h": {"p50": quantiles[0.5], "p95": quantiles[0.95], "p99": quantiles[0.99]},
    }
    return _json(body)


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
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response
