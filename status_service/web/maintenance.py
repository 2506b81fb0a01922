"""The admin API's maintenance windows: /admin/tenants/<tid>/maintenance."""
from __future__ import annotations

import secrets
import time
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify

from .. import report
from ..schemas import MaintenanceSchema
from ..store.maintenance import Maintenance, window
from .admin import AdminError, _body, _catalog, _ids, _known_tenant, _now, guarded

bp = guarded(Blueprint("admin_maintenance", __name__, url_prefix="/admin"))

MAX_WINDOWS = 100  # per tenant, ended ones included until they are dropped (when one is made a week after they end)


def _maintenance() -> Maintenance:
    return Maintenance(current_app.extensions["status_web"].store)


def _shown(window_id: str, definition: dict[str, Any], now: float) -> dict[str, Any]:
    """Return a window as the API shows it, with where it stands now."""
    span = window(window_id, definition)
    state = "scheduled" if now < span.starts_at else "active" if now < span.ends_at else "ended"
    return {"id": window_id, "starts_at": report.iso(span.starts_at), "ends_at": report.iso(span.ends_at),
            "integrations": list(span.integrations), "types": list(span.types), "note": span.note,
            "created_at": definition["created_at"], "state": state}


@bp.post("/tenants/<tenant_id>/maintenance")
def create_window(tenant_id: str) -> tuple[Response, int]:
    """Schedule a maintenance window; probers apply it within a few seconds, and it ends by itself."""
    _known_tenant(tenant_id)
    data = _body(MaintenanceSchema())
    now = time.time()
    if data["ends_at"].timestamp() <= now:
        raise AdminError(400, "invalid_request", "invalid body", {"ends_at": ["must be in the future"]})
    window_id, at = "mw_" + secrets.token_hex(6), _now()
    definition = {"starts_at": data["starts_at"].timestamp(), "ends_at": data["ends_at"].timestamp(),
                  "integrations": list(dict.fromkeys(data["integrations"])), "types": list(dict.fromkeys(data["types"])),
                  "note": data["note"], "created_at": at}
    done = _maintenance().add(tenant_id, window_id, definition, now, MAX_WINDOWS)
    if done < 0:
        raise AdminError(404, "not_found", f"no tenant {tenant_id}")
    if not done:
        raise AdminError(409, "limit_reached", f"tenant {tenant_id} has {MAX_WINDOWS} maintenance windows, the most allowed")
    _catalog().note(tenant_id, g.admin, "maintenance.create", f"tenants/{tenant_id}/maintenance/{window_id}", at)
    return jsonify(_shown(window_id, definition, now)), 201


@bp.get("/tenants/<tenant_id>/maintenance")
def list_windows(tenant_id: str) -> Response:
    """List a tenant's maintenance windows, by start."""
    _known_tenant(tenant_id)
    found, now = _maintenance().definitions(tenant_id), time.time()
    listed = sorted((_shown(i, d, now) for i, d in found.items()), key=lambda w: (w["starts_at"], w["id"]))
    return jsonify(maintenance=listed)


@bp.delete("/tenants/<tenant_id>/maintenance/<window_id>")
def delete_window(tenant_id: str, window_id: str) -> tuple[str, int]:
    """Cancel a window (ending it, if it is open)."""
    _known_tenant(tenant_id)
    _ids(window_id=window_id)
    if not _maintenance().remove(tenant_id, window_id):
        raise AdminError(404, "not_found", f"tenant {tenant_id} has no maintenance window {window_id}")
    _catalog().note(tenant_id, g.admin, "maintenance.delete", f"tenants/{tenant_id}/maintenance/{window_id}", _now())
    return "", 204
