"""The status page: /status for a browser (Accept: text/html), rendered on the server, no external asset."""
from __future__ import annotations

import re
import time
from typing import Any

from flask import Response, current_app, render_template, request

from .. import page, report, rollup
from ..store import StoredReport
from ..store.admin import Admin
from ..store.history import History

PAGE_ROWS = 200  # integrations a page shows; ?page=N for the next ones
DAY = 86400
FIVE_MINUTES = 300
REFRESH_S = 30
# Scripts and styles from this service only, nothing inline to run; no framing (clickjacking).
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
          "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


def wanted() -> bool:
    """Return whether the client asks for a page: text/html before JSON, as a browser does (*/* alone gets JSON)."""
    accept = request.headers.get("Accept")
    if not accept or "text/html" not in accept.lower():
        return False
    return request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html"  # a tie goes to JSON


def render(found: StoredReport, document: dict[str, Any], now: float) -> Response:
    """Return the page of a tenant's document: banner, 24 h chart, types, and a page of integrations with 24 h uptime."""
    data = document["data"]
    raw_page = request.args.get("page", "1")
    number = int(raw_page) if re.fullmatch(r"[1-9][0-9]{0,5}", raw_page) else 1  # ASCII digits only: int() takes "²" too
    shown = data["integrations"][(number - 1) * PAGE_ROWS:number * PAGE_ROWS]
    start = (now - DAY) // FIVE_MINUTES * FIVE_MINUTES
    names = [f"r{FIVE_MINUTES}:{row['id']}" for row in shown] + [f"s{FIVE_MINUTES}:{rollup.OVERALL}"]
    history = History(current_app.extensions["status_web"].store)
    kept = history.packs(found.tenant_id, names, start - 3600)  # one round trip for the whole page
    points = rollup.series(kept.pop(names[-1]), start, now, FIVE_MINUTES)
    rows = []
    for row in shown:
        healthy, unhealthy = rollup.Ledger(kept[f"r{FIVE_MINUTES}:{row['id']}"]).sums(now - DAY, now)
        uptime, _coverage = rollup.ratio(healthy, unhealthy, DAY)
        rows.append({**row, "ago": page.ago(row["checked_at"], now), "uptime": page.uptime_text(uptime)})
    html = render_template(
        "status.html", document=document, data=data, rows=rows, marks=page.MARKS, refresh_s=REFRESH_S,
        chart=page.chart(points, start, now), chart_w=page.CHART_W, chart_h=page.CHART_H,
        page=number, more=len(data["integrations"]) > number * PAGE_ROWS, tenant=request.args.get("tenant"),
    )
    return _secured(Response(html, mimetype="text/html"))



OVERVIEW_TENANTS = 50  # tenants an overview page shows; ?after=<id> for the next ones


def overview(after: str) -> Response:
    """Return the admin's page: every tenant, a page at a time, with its status and counts, each linked to its page."""
    store = current_app.extensions["status_web"].store
    listed, next_cursor = Admin(store).tenants(after, OVERVIEW_TENANTS)
    tallies = store.tallies([t.id for t in listed])
    now = time.time()
    for tenant_id, (counts, until) in list(tallies.items()):
        if counts is None or until < now:  # none kept, or no prober rewrote it in time: counted from its rows, aged
            found = store.report(tenant_id)
            tallies[tenant_id] = (report.tally(report.current(found.body, found.stale, found.until, now)["data"]["integrations"]) if found else None, until)
    tenants = []
    for info in listed:
        by_type = tallies[info.id][0] or {}
        counts = {state: sum(c.get(state, 0) for c in by_type.values()) for state in ("healthy", "maintenance")}
        total = sum(sum(c.values()) for c in by_type.values()) - counts["maintenance"]
        status = report.overall(counts["healthy"], total) if tallies[info.id][0] is not None else "unknown"
        tenants.append({"id": info.id, "status": status, "healthy": counts["healthy"], "total": total,
                        "maintenance": counts["maintenance"]})
    html = render_template("overview.html", tenants=tenants, marks=page.MARKS, refresh_s=REFRESH_S, next_cursor=next_cursor)
    return _secured(Response(html, mimetype="text/html"))


def _secured(response: Response) -> Response:
    """Add the page's security and caching headers."""
    response.headers["Content-Security-Policy"] = POLICY
    response.headers["Cache-Control"] = "private, no-cache"
    response.headers["Vary"] = "Accept"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
