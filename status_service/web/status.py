"""GET /status: authenticate, read the tenant's prebuilt report, return its bytes."""
from __future__ import annotations

import json
import time

from flask import Blueprint, Response, current_app, request

from .. import report
from ..store import Store, StoredReport
from .auth import AuthError, candidate_keys, digest
from .cache import TtlCache

bp = Blueprint("status", __name__)

CACHE_ENTRIES = 10_000  # credentials remembered per worker; a few MB at most
HINT_ENTRIES = 100_000  # which tenant a credential belonged to; only a hint, checked on every lookup


def install(app_extensions: dict, store: Store, cache_s: float) -> None:
    """Give the app its store, its short-lived report cache and its tenant hints."""
    app_extensions["status_store"] = store
    app_extensions["status_cache"] = TtlCache[tuple[str, ...], StoredReport](cache_s, CACHE_ENTRIES)
    app_extensions["status_hints"] = TtlCache[tuple[str, ...], str](float("inf"), HINT_ENTRIES)


@bp.get("/status")
def status() -> Response:
    """Return the caller's tenant report; 200 whatever its integrations say."""
    # Keyed by digests, so no plain key lingers in the cache.
    digests = tuple(digest(key) for key in candidate_keys(request.headers.get("Authorization")))
    now = time.time()
    cache: TtlCache[tuple[str, ...], StoredReport] = current_app.extensions["status_cache"]
    found = cache.get(digests, now)
    if found is None:
        found = _lookup(digests, now)
        cache.put(digests, found, now)
    response = Response(found.body, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


def _lookup(digests: tuple[str, ...], now: float) -> StoredReport:
    """Read the tenant's report from Redis, aging stale results if no prober has rebuilt it."""
    store: Store = current_app.extensions["status_store"]
    hints: TtlCache[tuple[str, ...], str] = current_app.extensions["status_hints"]
    found = store.lookup(digests, hints.get(digests, now))
    if found is None:
        raise AuthError("unknown API key")
    hints.put(digests, found.tenant_id, now)
    if found.until < now:
        # No prober rebuilt this report in time: age its results here (body and times read together).
        aged = store.report_with_stale_times(found.tenant_id)
        if aged is not None:
            body, stale_at = aged
            document = report.expire(json.loads(body), stale_at, now)
            found = StoredReport(found.tenant_id, report.encode(document), report.next_stale(stale_at, now))
    return found
