"""Liveness and readiness for load balancers; no key, no tenant data."""
from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, jsonify

from ..store import StoreUnavailable
from .errors import RETRY_AFTER_S, error_response
from .status import BLIP_BUDGET_S, Web

bp = Blueprint("health", __name__)


@bp.get("/livez")
def livez() -> Response:
    """Answer while the process serves; touches nothing else."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Response:
    """Answer 200 when this node can answer /status correctly; report the prober fleet either way.

    Not ready: Redis holds no registry yet, or Redis has been unreachable for longer than memory may
    stand in for it. A dead prober fleet leaves every node ready: /status then says unknown/stale,
    which is the truth, rather than the load balancer refusing every customer.
    """
    web: Web = current_app.extensions["status_web"]
    checks = {"redis": "ok", "registry": "ok", "prober": "ok"}
    outage_s = web.link.resting()  # Redis failed a moment ago: a load balancer's check must not wait on it
    if outage_s is None:
        try:
            seeded, probers = web.store.readiness(time.time())
            web.link.up()
            web.registry_seen = web.registry_seen or seeded
            if not seeded:
                checks["registry"] = "not seeded yet"
            if probers == 0:
                checks["prober"] = "no fresh prober heartbeat"
        except StoreUnavailable as exc:
            outage_s = web.link.down(exc)
    if outage_s is not None:
        # Within the budget, /status answers from memory (or is as unavailable for a tenant never
        # served as it would be on any node): taking this node out would help nobody. A node that
        # never reached a registry has nothing to offer.
        checks["redis"] = f"unreachable for {outage_s:.0f}s"
        checks["registry"] = "ok" if web.registry_seen else "never reached"
        checks["prober"] = "unknown"
        ready = outage_s <= BLIP_BUDGET_S and web.registry_seen
    else:
        ready = checks["registry"] == "ok"
    if not ready:
        failed = [name for name in ("redis", "registry") if checks[name] != "ok"]
        response = error_response(503, "not_ready", f"failed checks: {', '.join(failed)}", checks=checks)
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response
    return jsonify(status="ok", checks=checks)
