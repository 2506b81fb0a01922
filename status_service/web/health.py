"""Liveness and readiness for load balancers; no key, no tenant data."""
from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, jsonify

from ..store import Store, StoreUnavailable
from .errors import RETRY_AFTER_S, error_response

bp = Blueprint("health", __name__)


@bp.get("/livez")
def livez() -> Response:
    """Answer while the process serves; touches nothing else."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Response:
    """Answer 200 when Redis answers and some prober's heartbeat is fresh, else 503 naming the check."""
    store: Store = current_app.extensions["status_store"]
    checks = {"redis": "ok", "prober": "ok"}
    try:
        if store.fresh_probers(time.time()) == 0:  # an answer at all means Redis answers
            checks["prober"] = "no fresh prober heartbeat"
    except StoreUnavailable:
        checks["redis"] = "unreachable"
        checks["prober"] = "unknown"
    failed = [name for name, result in checks.items() if result != "ok"]
    if failed:
        response = error_response(503, "not_ready", f"failed checks: {', '.join(failed)}", checks=checks)
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response
    return jsonify(status="ok", checks=checks)
