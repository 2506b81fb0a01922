"""GET /status: authenticate, read the tenant's prebuilt report, return its bytes."""
from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from ..store import Store, StoreUnavailable
from .auth import AuthError, candidate_keys, digest

bp = Blueprint("status", __name__)


@bp.get("/status")
def status() -> Response:
    """Return the caller's tenant report; 200 whatever its integrations say."""
    store: Store = current_app.extensions["status_store"]
    digests = [digest(key) for key in candidate_keys(request.headers.get("Authorization"))]
    tenant_id = store.tenant_for(digests)
    if tenant_id is None:
        raise AuthError("unknown API key")
    found = store.report(tenant_id)
    if found is None:
        raise StoreUnavailable("report not built yet")
    body, _until = found
    response = Response(body, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response
